"""Starting is cheap: the heavy client libraries are imported when a check or remediation
first uses them (start, run, execute), never by importing, validating or building one.

`runbookd run` imports only the types its config names, and all of them when one is unknown
(the error lists them): even then, the libraries behind them (aioboto3 and botocore,
redis-py, cryptography, asyncpg, psutil) would add a few hundred milliseconds to every start,
configured or not. Each command imports only what it runs.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.core.plugins import BUILTIN_MODULES
from tests.paths import ROOT

EXAMPLE = ROOT / "config" / "runbookd.example.yaml"
HEAVY = (
    "aioboto3",
    "aiobotocore",
    "boto3",
    "botocore",
    "redis",
    "asyncpg",
    "cryptography",
    "psutil",
)
SUBPROCESS_TIMEOUT = 60.0

# Run in a fresh interpreter: argv is the example config, then the library names to look for.
# Prints which of them each stage left in sys.modules.
PROBE = """
import json, sys

heavy = set(sys.argv[2:])
stages = {}

def loaded(stage):
    stages[stage] = sorted(heavy & {name.split(".")[0] for name in sys.modules})

import daemon.cli.main, daemon.core.plugins
daemon.core.plugins.load()
loaded("import")

from daemon.runtime.daemon import build_checks
from daemon.config.loader import load_config
config = load_config(sys.argv[1])
loaded("load_config")

built = build_checks(config)
from remediations.base import REMEDIATIONS
for name, fields in {
    "redis_flush": {"url": "redis://:pw@cache:6379/2?socket_timeout=2", "pattern": "s:*"},
    "postgres_maintenance": {
        "dsn": "postgresql://maint:pw@db/app", "operation": "analyze", "tables": ["t"],
    },
}.items():
    cls = REMEDIATIONS.get(name)
    cls(name, cls.Config.model_validate({"type": name, **fields}))
loaded("build")

stages["check_types"] = sorted({cfg.type for cfg in config.checks.values()})
print(json.dumps(stages))
"""


def run_probe(code: str, *args: str) -> dict[str, list[str]]:
    """Run `code` in a fresh interpreter; the JSON it prints."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def stages() -> dict[str, list[str]]:
    return run_probe(PROBE, str(EXAMPLE), *HEAVY)


def test_the_example_uses_the_heavy_check_types(stages: dict[str, list[str]]) -> None:
    # Otherwise the stages below would prove little.
    assert {"postgres", "redis", "s3_backup", "system", "tls"} <= set(stages["check_types"])


@pytest.mark.parametrize("stage", ["import", "load_config", "build"])
def test_no_heavy_library_before_first_use(stages: dict[str, list[str]], stage: str) -> None:
    assert stages[stage] == []


# Run in a fresh interpreter, as `runbookd run` does: argv is a config file. Prints the modules
# each stage left in sys.modules.
RUN_PROBE = """
import json, sys

stages = {}
import daemon.cli.main
stages["cli"] = sorted(sys.modules)
from daemon.config.loader import load_config
from daemon.runtime.daemon import build_checks, build_plan
config = load_config(sys.argv[1])
build_checks(config), build_plan(config)
stages["run"] = sorted(sys.modules)
print(json.dumps(stages))
"""

HTTP_ONLY = """
checks:
  api: {type: http, url: "http://127.0.0.1:9/health"}
rules:
  down: {when: api.up < 1, do: [hook]}
remediations:
  hook: {type: http, url: "http://127.0.0.1:9/hook"}
"""


def probe_run(config: Path) -> dict[str, list[str]]:
    return run_probe(RUN_PROBE, str(config))


def test_a_config_imports_the_modules_of_its_types_only(tmp_path: Path) -> None:
    config = tmp_path / "runbookd.yaml"
    config.write_text(HTTP_ONLY)
    stages = probe_run(config)
    assert set(stages["run"]) & set(BUILTIN_MODULES) == {"checks.http", "remediations.http"}


def test_the_command_line_imports_no_daemon_before_a_command_needs_it(tmp_path: Path) -> None:
    """`runbookd incidents` talks to a daemon: no config models, no YAML, no store."""
    config = tmp_path / "runbookd.yaml"
    config.write_text("checks: {}\n")
    loaded = set(probe_run(config)["cli"])
    assert {
        "daemon.runtime.daemon",
        "daemon.config.loader",
        "daemon.config.document",
        "yaml",
        "pydantic",
        "daemon.cli.demo.run",
    } & loaded == set()


@pytest.mark.skipif(importlib.util.find_spec("rich") is None, reason="rich is not installed")
def test_logging_does_not_import_rich(tmp_path: Path) -> None:
    """structlog would import rich (not a dependency; tools beside runbookd install it) for
    its tracebacks on a terminal: 3 MB and 50 ms at every start."""
    config = tmp_path / "runbookd.yaml"
    config.write_text(HTTP_ONLY)
    assert [name for name in probe_run(config)["run"] if name.split(".")[0] == "rich"] == []
