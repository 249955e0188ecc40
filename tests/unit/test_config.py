"""Config loading: YAML -> validated models, every problem as `FILE:LINE path: message`.

Each file in tests/bad_configs/ carries its expected problems in its leading comments:
`# expect: {file}:LINE path: message` (`{file}` is the path the loader was given) and may set
environment variables with `# env: NAME=value`; variables named RUNBOOKD_TEST_* are unset.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pytest
import yaml
from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

import checks.base
import daemon.config.document as config_document
import daemon.config.reader as config_reader
import daemon.config.validation as config_validation
import remediations.base
from checks.base import CheckConfig, CheckContext, CheckResult
from daemon.config import yaml_loader
from daemon.config.check import check_config_main, counted
from daemon.config.document import RunbookConfig, config_model
from daemon.config.loader import config_hash, load_config, load_config_text
from daemon.config.problems import ConfigError, Problem
from daemon.config.settings import BudgetConfig, DaemonSettings, parse_listen
from daemon.config.webhooks import WebhookAuth
from daemon.core import plugins
from daemon.core.models import Incident, RemediationResult
from daemon.core.registry import Registry
from daemon.core.units import StrictModel, format_duration, parse_duration, parse_ratio
from daemon.rules.config import RuleConfig
from remediations.base import RemediationConfig, RemediationContext
from tests.config_problems import problems as problems_of
from tests.paths import BAD_CONFIGS, ROOT

# Test-only types in registries of their own, so the tests neither depend on the built-in
# modules nor see types other tests register (messages list every known type).
TEST_CHECKS: Registry[type[checks.base.Check]] = Registry("check")
TEST_REMEDIATIONS: Registry[type[remediations.base.Remediation]] = Registry("remediation")


class ProbeConfig(CheckConfig):
    type: Literal["test_probe"]
    target: str = "localhost"
    token: SecretStr | None = None

    def value_names(self) -> frozenset[str]:
        return frozenset({"up", "latency_seconds"})


class ScrapeConfig(CheckConfig):
    """Its values depend on what it scrapes: no value_names(), so rules may name any."""

    type: Literal["test_scrape"]
    url: str


class ActionConfig(RemediationConfig):
    type: Literal["test_action"]
    secret: SecretStr | None = None


class _TestCheck:
    def __init__(self, name: str, config: Any) -> None:
        self.name = name

    async def run(self, ctx: CheckContext) -> CheckResult:
        return CheckResult.unknown("test only")


@TEST_CHECKS.register
class Probe(_TestCheck):
    type: ClassVar[str] = "test_probe"
    Config: ClassVar[builtins.type[CheckConfig]] = ProbeConfig


@TEST_CHECKS.register
class Scrape(_TestCheck):
    type: ClassVar[str] = "test_scrape"
    Config: ClassVar[builtins.type[CheckConfig]] = ScrapeConfig


@TEST_REMEDIATIONS.register
class Action:
    type: ClassVar[str] = "test_action"
    Config: ClassVar[builtins.type[RemediationConfig]] = ActionConfig
    idempotent: ClassVar[bool] = True
    destructive: ClassVar[bool] = False
    notifier: ClassVar[bool] = False

    def __init__(self, name: str, config: Any) -> None:
        self.name = name

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        return RemediationResult(ok=True, detail="test only")

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        return None


@pytest.fixture(autouse=True)
def test_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "BUILTIN_MODULES", ())
    monkeypatch.setattr(plugins, "BUILTIN_CHECKS", {})
    monkeypatch.setattr(plugins, "BUILTIN_REMEDIATIONS", {})
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setattr(config_document, "CHECKS", TEST_CHECKS)
    monkeypatch.setattr(config_document, "REMEDIATIONS", TEST_REMEDIATIONS)
    for name in list(os.environ):
        if name.startswith("RUNBOOKD_TEST_"):
            monkeypatch.delenv(name)


GOOD = """\
runbookd:
  listen: "[::1]:9464"
  dry_run: true
  budget: {max_actions: 3, window: 30m}
checks:
  api:
    type: test_probe
    target: http://localhost:8080/healthz
    interval: 15s
    jitter: 5%
  metrics:
    type: test_scrape
    url: http://localhost:9090/metrics
remediations:
  restart: {type: test_action, cooldown: 10m}
  page: {type: test_action}
rules:
  api_down:
    when: api.up < 1
    for: 2m
    do: [restart]
    verify_within: 5m
    escalate: [page]
  errors:
    when: metrics.error_ratio > 5%
"""


# --- bad-config fixtures ---------------------------------------------------------------------


def fixture_header(path: Path) -> tuple[list[str], dict[str, str]]:
    expected: list[str] = []
    env: dict[str, str] = {}
    for raw in path.read_bytes().splitlines():
        line = raw.decode("ascii")
        if not line.startswith("#"):
            break
        if line.startswith("# expect: "):
            expected.append(line.removeprefix("# expect: ").replace("{file}", str(path)))
        elif line.startswith("# env: "):
            name, _, value = line.removeprefix("# env: ").partition("=")
            env[name] = value
    return expected, env


# libyaml where PyYAML has it, and the pure-Python parser: the same messages either way.
LOADERS = list(dict.fromkeys([yaml_loader.PyLoader, yaml_loader.DEFAULT_LOADER]))


@pytest.mark.parametrize("loader", LOADERS, ids=lambda loader: loader.__name__)
@pytest.mark.parametrize("path", sorted(BAD_CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_config(
    path: Path,
    loader: yaml_loader.Loader,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(config_reader, "_LOADER", loader)
    expected, env = fixture_header(path)
    assert expected, f"{path.name} has no '# expect:' lines"
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert check_config_main(str(path)) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == expected


def test_there_are_enough_bad_configs() -> None:
    assert len(list(BAD_CONFIGS.glob("*.yaml"))) >= 20


# --- good configs ----------------------------------------------------------------------------


def test_good_config_loads() -> None:
    config = load_config_text(GOOD, "good.yaml")

    assert config.runbookd.listen_address == ("::1", 9464)
    assert config.runbookd.budget.window == 1800.0
    assert isinstance(config.checks["api"], ProbeConfig)
    assert config.checks["api"].jitter == 0.05
    assert isinstance(config.checks["metrics"], ScrapeConfig)
    assert config.remediations["restart"].cooldown == 600.0
    rule = config.rules["api_down"]
    assert rule.for_ == 120.0
    assert rule.when.key == "api.up"
    assert (rule.do, rule.escalate) == (["restart"], ["page"])


@pytest.mark.parametrize("text", ["", "\n", "# nothing configured yet\n", "checks:\nrules:\n"])
def test_empty_config_is_valid(text: str) -> None:
    config = load_config_text(text, "empty.yaml")

    assert (config.checks, config.remediations, config.rules) == ({}, {}, {})
    assert config.runbookd.listen == "127.0.0.1:9464"
    assert config.runbookd.log_level == "info"


def test_env_values_defaults_and_dollar_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOKD_TEST_HOST", "api.internal")
    monkeypatch.setenv("RUNBOOKD_TEST_EMPTY", "")
    text = """\
checks:
  api:
    type: test_probe
    target: "http://${RUNBOOKD_TEST_HOST}:${RUNBOOKD_TEST_PORT:-8080}/a$$b/$$${RUNBOOKD_TEST_HOST}"
    timeout: ${RUNBOOKD_TEST_EMPTY:-3s}
    interval: ${RUNBOOKD_TEST_UNSET:-1m}
runbookd:
  dry_run: ${RUNBOOKD_TEST_DRY_RUN:-true}
  state_dir: costs $5
"""
    config = load_config_text(text, "env.yaml")

    api = config.checks["api"]
    assert isinstance(api, ProbeConfig)
    assert api.target == "http://api.internal:8080/a$b/$api.internal"
    assert (api.timeout, api.interval) == (3.0, 60.0)
    assert config.runbookd.dry_run is True  # "true" from the default, coerced by pydantic
    assert config.runbookd.state_dir == "costs $5"  # a lone $ is just a character


def test_env_value_is_not_interpolated_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOKD_TEST_TARGET", "${RUNBOOKD_TEST_OTHER}")
    config = load_config_text("checks: {api: {type: test_probe, target: $RUNBOOKD}}\n", "c.yaml")
    assert config.checks["api"].target == "$RUNBOOKD"  # type: ignore[attr-defined]

    text = "checks: {api: {type: test_probe, target: '${RUNBOOKD_TEST_TARGET}'}}\n"
    config = load_config_text(text, "c.yaml")
    assert config.checks["api"].target == "${RUNBOOKD_TEST_OTHER}"  # type: ignore[attr-defined]


def test_secret_read_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n", encoding="utf-8")
    text = f"checks:\n  api:\n    type: test_probe\n    token_file: {secret}\n"

    api = load_config_text(text, "c.yaml").checks["api"]

    assert isinstance(api, ProbeConfig)
    assert api.token is not None
    assert api.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(api)


def test_merge_keys_share_settings_and_may_be_overridden() -> None:
    text = """\
checks:
  api: &defaults
    type: test_probe
    interval: 10s
    timeout: 2s
  admin:
    <<: *defaults
    timeout: 5s
  bad:
    <<: *defaults
    jitter: 2
"""
    assert problems_of(text) == [
        "c.yaml:11 checks.bad.jitter: not a ratio: 2 (use e.g. 0.05 or 5%)"
    ]

    config = load_config_text(text.replace("jitter: 2", "jitter: 0.2"), "c.yaml")
    admin = config.checks["admin"]
    assert (admin.type, admin.interval, admin.timeout) == ("test_probe", 10.0, 5.0)


def test_keys_are_text_not_yaml_booleans() -> None:
    config = load_config_text("checks:\n  on: {type: test_probe}\n", "c.yaml")
    assert list(config.checks) == ["on"]


# --- problems --------------------------------------------------------------------------------


def test_problem_format() -> None:
    problem = Problem("config/prod.yaml", 42, "checks.health.timeout", "not a duration: 'abc'")
    assert str(problem) == "config/prod.yaml:42 checks.health.timeout: not a duration: 'abc'"


def test_problems_are_sorted_by_line_and_all_reported() -> None:
    text = """\
rules:
  r: {when: api.up < 1, for: soon}
checks:
  api: {type: test_probe, timeout: never}
runbookd: {log_level: loud}
"""
    assert [p.split(" ")[0] for p in problems_of(text)] == ["c.yaml:2", "c.yaml:4", "c.yaml:5"]


def test_config_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("a: 1\nb: 2\n", "c.yaml")
    known = (
        "checks, deploys, jobs, procedures, remediations, rules, runbookd, status_page, webhooks"
    )
    assert str(info.value).splitlines() == [
        f"c.yaml:1 a: unknown field (known: {known})",
        f"c.yaml:2 b: unknown field (known: {known})",
    ]


def test_cross_references_are_checked_only_once_the_entries_are_valid() -> None:
    # An invalid check must not also be reported as "missing" by the rule that names it.
    text = "checks:\n  api: {type: test_probe, timeout: x}\nrules:\n  r: {when: api.up < 1}\n"
    assert problems_of(text) == [
        "c.yaml:2 checks.api.timeout: not a duration: 'x' (use e.g. 500ms, 30s, 5m, 1h)"
    ]


def test_no_remediations_defined() -> None:
    text = "checks: {api: {type: test_probe}}\nrules:\n  r: {when: api.up < 1, do: [fix]}\n"
    assert problems_of(text) == ["c.yaml:3 rules.r.do.0: no remediation named 'fix' (none defined)"]


@pytest.fixture(params=LOADERS, ids=lambda loader: loader.__name__)
def either_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_reader, "_LOADER", request.param)


def test_libyaml_parses_where_pyyaml_has_it() -> None:
    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML was built without libyaml")
    assert issubclass(config_reader._LOADER, yaml_loader.CParser)


@pytest.mark.usefixtures("either_parser")
def test_yaml_syntax_error_in_text() -> None:
    assert problems_of("checks:\n  api: [1, 2\n") == [
        "c.yaml:3 yaml: expected ',' or ']', but got '<stream end>'"
    ]


@pytest.mark.usefixtures("either_parser")
def test_yaml_control_character() -> None:
    assert problems_of("checks: {}\nrules: \x01\n") == [
        "c.yaml:2 yaml: character #x0001: special characters are not allowed"
    ]


def test_unsupported_tag() -> None:
    assert problems_of("runbookd:\n  state_dir: !secret x\n") == [
        "c.yaml:2 runbookd.state_dir: could not determine a constructor for the tag '!secret'"
    ]


def test_bad_scalar_is_a_problem_not_a_traceback() -> None:
    assert problems_of("runbookd:\n  max_checks_in_flight: !!int lots\n") == [
        "c.yaml:2 runbookd.max_checks_in_flight: invalid literal for int() with base 10: 'lots'"
    ]


@pytest.mark.usefixtures("either_parser")
def test_recursive_alias() -> None:
    assert problems_of("checks: &a {api: *a}\n") == [
        "c.yaml:1 checks.api: an alias refers to itself"
    ]


@pytest.mark.usefixtures("either_parser")
def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    assert problems_of("\n".join(lines)) == [
        "c.yaml:6 yaml: too large: the alias *a4 takes the config past 250,000 YAML nodes "
        "(aliases and << merges count every node they repeat)"
    ]


@pytest.mark.usefixtures("either_parser")
def test_deep_nesting() -> None:
    assert problems_of("a: " + "[" * 5000 + "]" * 5000) == [
        "c.yaml:1 yaml: nested deeper than 64 levels"
    ]


# --- files and the check-config command ------------------------------------------------------


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:0 file: cannot read: No such file or directory"
    ]


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}:0 file: not a regular file (a directory)"
    ]


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "runbookd.yaml"
    path.write_text(GOOD, encoding="utf-8")
    assert load_config(path) == load_config_text(GOOD, str(path))


def test_check_config_main_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runbookd.yaml"
    path.write_text(GOOD, encoding="utf-8")

    assert check_config_main(str(path)) == 0

    out, err = capsys.readouterr()
    assert out == f"{path}: ok (2 checks, 2 rules, 2 remediations)\n"
    assert err == ""


def test_check_config_counts_read_as_english() -> None:
    assert [counted(n, "check") for n in (0, 1, 2)] == ["0 checks", "1 check", "2 checks"]


def test_check_config_main_reports_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "runbookd.yaml"
    path.write_text(GOOD.replace("interval: 15s", "interval: 15"), encoding="utf-8")

    assert check_config_main(str(path)) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"{path}:9 checks.api.interval: not a duration: 15 (use e.g. 500ms, 30s, 5m, 1h)\n"
    )


def test_check_config_main_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main("/nonexistent/runbookd.yaml") == 2
    assert capsys.readouterr().err.startswith("/nonexistent/runbookd.yaml:0 file: cannot read")


# --- listen ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9464", ("::1", 9464)),
        ("[::]:65535", ("::", 65535)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text", ["9464", ":9464", "host:", "host:65536", "host:port", "::1:80", "[nope]:80", "a b:1"]
)
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not"):
        parse_listen(text)


# --- hash, model, plugins --------------------------------------------------------------------


def test_config_hash_ignores_formatting_but_not_values() -> None:
    reformatted = "# comment\n" + GOOD.replace("interval: 15s", "interval: 15000ms")
    changed = GOOD.replace("interval: 15s", "interval: 16s")

    digest = config_hash(load_config_text(GOOD, "a.yaml"))

    assert len(digest) == 64
    assert config_hash(load_config_text(reformatted, "b.yaml")) == digest
    assert config_hash(load_config_text(changed, "c.yaml")) != digest


def test_config_hash_covers_type_specific_fields_and_hides_secrets() -> None:
    base = "checks: {api: {type: test_probe, target: a, token: hunter2}}\n"
    digest = config_hash(load_config_text(base, "c.yaml"))
    assert config_hash(load_config_text(base.replace("target: a", "target: b"), "c.yaml")) != digest
    assert config_hash(load_config_text(base.replace("hunter2", "other"), "c.yaml")) == digest


def test_config_model_is_cached_per_set_of_types() -> None:
    model = config_model()
    assert config_model() is model
    assert issubclass(model, RunbookConfig)


def test_a_config_imports_only_the_modules_of_its_types(monkeypatch: pytest.MonkeyPatch) -> None:
    imported: list[str] = []
    monkeypatch.setattr(plugins, "BUILTIN_CHECKS", {"test_probe": "probe_module"})
    monkeypatch.setattr(plugins, "BUILTIN_REMEDIATIONS", {"test_action": "action_module"})
    monkeypatch.setattr(plugins, "import_module", imported.append)
    monkeypatch.setattr(plugins, "load", lambda: pytest.fail("loaded every type"))

    text = "checks: {a: {type: test_probe}, b: {type: test_probe}}\n"
    load_config_text(text + "remediations: {fix: {type: test_action}}\n", "c.yaml")
    assert imported == ["probe_module", "action_module"]

    imported.clear()
    load_config_text("runbookd: {dry_run: true}\n", "c.yaml")
    assert imported == []


@pytest.mark.parametrize(
    "text",
    [
        "checks: {api: {type: test_scrape, url: x}}\n",  # registered, but not built in: a plugin's
        "checks: {api: {type: no_such_type}}\n",
        "checks: {api: {interval: 1s}}\n",  # no type at all
        "remediations: {fix: {type: [test_action]}}\n",
    ],
)
def test_a_type_that_is_not_built_in_loads_every_plugin(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugins, "BUILTIN_CHECKS", {"test_probe": "probe_module"})
    calls: list[None] = []
    monkeypatch.setattr(plugins, "load", lambda: calls.append(None))
    with contextlib.suppress(ConfigError):
        load_config_text(text, "c.yaml")
    assert calls == [None]


def test_the_builtin_type_map_names_the_module_of_each_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What daemon/core/plugins.py says without importing, against what the modules register."""
    monkeypatch.undo()
    for module in plugins.BUILTIN_MODULES:
        pytest.importorskip(module)
    for registry, builtin in [
        (checks.base.CHECKS, plugins.BUILTIN_CHECKS),
        (remediations.base.REMEDIATIONS, plugins.BUILTIN_REMEDIATIONS),
    ]:
        registered = {name: registry.get(name).__module__ for name in registry}
        assert {k: v for k, v in registered.items() if v in plugins.BUILTIN_MODULES} == builtin


def test_an_unknown_type_lists_every_type_however_few_the_config_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plugins, "BUILTIN_CHECKS", {"test_probe": "tests.unit.test_config"})
    only_probe: Registry[type[checks.base.Check]] = Registry("check")
    only_probe.register(Probe)
    monkeypatch.setattr(config_document, "CHECKS", only_probe)
    # Every type: here a plugin brings test_scrape.
    monkeypatch.setattr(plugins, "load", lambda: setattr(config_document, "CHECKS", TEST_CHECKS))

    assert problems_of("checks:\n  api: {type: test_probe, target: [x]}\n") == [
        "c.yaml:2 checks.api.target: input should be a valid string"
    ]
    assert config_document.CHECKS is only_probe
    assert problems_of("checks:\n  api: {type: test_probe}\n  x: {type: nope}\n") == [
        "c.yaml:3 checks.x.type: unknown check type 'nope' (known: test_probe, test_scrape)"
    ]


def test_builtin_types_build_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the real registries: every built-in Config joins the unions."""
    monkeypatch.undo()
    for module in plugins.BUILTIN_MODULES:
        pytest.importorskip(module)
    assert issubclass(config_model(), RunbookConfig)
    text = "checks:\n  x: {type: no_such_type}\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "c.yaml")
    [problem] = info.value.problems
    assert problem.path == "checks.x.type"
    for name in checks.base.CHECKS:
        assert name in problem.message


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The configs in config/ against the real built-in types; addresses from the environment
    (as `runbookd demo` sets them) get a placeholder."""
    monkeypatch.undo()
    for module in plugins.BUILTIN_MODULES:
        pytest.importorskip(module)
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text(encoding="utf-8")):
        monkeypatch.setenv(name, os.environ.get(name, "http://127.0.0.1:9"))
    load_config(path)


def test_no_registered_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_document, "CHECKS", Registry("check"))
    assert problems_of("checks:\n  api: {type: http}\n") == [
        "c.yaml:2 checks.api: no check types are registered"
    ]


def test_on_blind_only_pages(tmp_path: Path) -> None:
    """Blindness may page, never roll back: on_blind must name notifiers."""
    from daemon.config.loader import load_config_text
    from daemon.config.problems import ConfigError

    text = """
checks:
  api: {type: test_probe}
rules:
  r:
    when: api.up < 1
    on_blind: [act]
remediations:
  act: {type: test_action}
"""
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "c.yaml")
    assert str(err.value) == (
        "c.yaml:7 rules.r.on_blind.0: 'act' is not a notifier: being blind only ever pages (use "
        "a pagerduty or slack remediation, or a command or http one with `notifier: true`)"
    )


# --- ranges: every duration finite and bounded, every number finite --------------------------


def test_check_config_refuses_a_zero_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `interval: 0s` passed check-config, then a ZeroDivisionError ended the
    scheduler at run time and every check stopped."""
    path = tmp_path / "runbookd.yaml"
    path.write_text("checks:\n  api:\n    type: test_probe\n    interval: 0s\n", encoding="utf-8")

    assert check_config_main(str(path)) == 2

    assert capsys.readouterr().err == (
        f"{path}:4 checks.api.interval: must be at least 100ms, not 0s\n"
    )


OVERFLOWING = "9" * 400 + "d"  # float() makes inf of it


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("timeout: 0ms", "checks.api.timeout: must be more than 0s, not 0s"),
        ("interval: 50ms", "checks.api.interval: must be at least 100ms, not 50ms"),
        (
            f"interval: {OVERFLOWING}",
            "checks.api.interval: not a finite duration: '99999999999999999999...'",
        ),
        ("timeout: 367d", "checks.api.timeout: must be at most 366d, not 367d"),
        ("stale_after: 0s", "checks.api.stale_after: must be more than 0s, not 0s"),
        ("jitter: 500%", "checks.api.jitter: not a ratio: '500%' (use e.g. 0.05 or 5%)"),
        ("jitter: .nan", "checks.api.jitter: not a ratio: nan (use e.g. 0.05 or 5%)"),
        ("jitter: .inf", "checks.api.jitter: not a ratio: inf (use e.g. 0.05 or 5%)"),
    ],
)
def test_check_ranges(entry: str, expected: str) -> None:
    text = f"checks:\n  api:\n    type: test_probe\n    {entry}\n"
    assert problems_of(text) == [f"c.yaml:4 {expected}"]


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("api.up < 1e400", "not a finite threshold: '1e400'"),
        ("api.up > -1e400", "not a finite threshold: '-1e400'"),
        ("api.up < 1e400%", "not a finite threshold: '1e400%'"),
        ("api.up < nan", "not a threshold: 'nan' (a number, 5%, 800ms, or 1.5 x baseline(1h))"),
        ("api.up < inf", "not a threshold: 'inf' (a number, 5%, 800ms, or 1.5 x baseline(1h))"),
        (
            f"api.latency_seconds > {OVERFLOWING}",
            "not a finite duration: '99999999999999999999...'",
        ),
        (
            "api.latency_seconds > 1e400 x baseline(1h)",
            "a baseline factor must be a finite number above 0, not '1e400'",
        ),
        (
            "api.latency_seconds > -2 x baseline(1h)",
            "a baseline factor must be a finite number above 0, not '-2'",
        ),
        ("api.latency_seconds > 2 x baseline(0s)", "a baseline window must be longer than zero"),
        (
            "api.latency_seconds > 2 x baseline(367d)",
            "a baseline window must be at most 366d, not 367d",
        ),
    ],
)
def test_thresholds_are_finite(when: str, expected: str) -> None:
    text = f"checks: {{api: {{type: test_probe}}}}\nrules:\n  r:\n    when: {when}\n"
    assert problems_of(text) == [f"c.yaml:4 rules.r.when: {expected}"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            "budget: {max_actions: 0}",
            "budget.max_actions: input should be greater than or equal to 1",
        ),
        ("budget: {window: 0s}", "budget.window: must be more than 0s, not 0s"),
        ("history_retention: 3661d", "history_retention: must be at most 3660d, not 3661d"),
        ("drain_grace: 367d", "drain_grace: must be at most 366d, not 367d"),
        (
            "api: {rate_limit: {per_second: .inf}}",
            "api.rate_limit.per_second: input should be a finite number",
        ),
        (
            "api: {rate_limit: {per_second: .nan}}",
            "api.rate_limit.per_second: input should be a finite number",
        ),
    ],
)
def test_daemon_ranges(settings: str, expected: str) -> None:
    assert problems_of(f"runbookd:\n  {settings}\n") == [f"c.yaml:2 runbookd.{expected}"]


def test_the_edges_of_each_range_are_valid() -> None:
    text = """\
runbookd:
  budget: {max_actions: 1, window: 1ms}
  drain_grace: 0s
  history_retention: 3660d
checks:
  api: {type: test_probe, interval: 100ms, timeout: 5s, stale_after: 5.2s}
  weekly: {type: test_probe, interval: 366d, timeout: 366d}
remediations:
  fix: {type: test_action, cooldown: 0s, timeout: 1ms, max_runs: {count: 1, window: 366d}}
rules:
  r: {when: api.up < -1e300, for: 0s, clear_for: 0s, verify_within: 1ms, blind_after: 1ms}
"""
    config = load_config_text(text, "c.yaml")
    assert config.checks["api"].interval == 0.1
    assert config.checks["api"].staleness() == 5.2
    assert config.runbookd.history_retention == 3660 * 86400
    assert config.rules["r"].condition.threshold == -1e300


# Durations of zero that mean something: no cooldown, fire at once, no grace.
ZERO_ALLOWED = {"cooldown", "drain_grace", "for", "clear_for", "kill_grace", "scale_in_after"}
# checks/http.py: 0s makes every answer slow (WARN); to become a PositiveDuration there.


def _duration_fields(model: type[BaseModel]) -> Iterator[tuple[str, TypeAdapter[Any]]]:
    for name, field in model.model_fields.items():
        annotated = (
            Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        )
        if config_validation._parses_duration(annotated):
            yield field.alias or name, TypeAdapter(annotated)


def _config_models() -> list[type[BaseModel]]:
    for module in plugins.BUILTIN_MODULES:
        pytest.importorskip(module)
    from remediations.retry import RetryConfig

    registered = [checks.base.CHECKS.get(n).Config for n in checks.base.CHECKS]
    registered += [
        remediations.base.REMEDIATIONS.get(n).Config for n in remediations.base.REMEDIATIONS
    ]
    return [
        DaemonSettings,
        BudgetConfig,
        WebhookAuth,
        RuleConfig,
        remediations.base.RunLimit,
        RetryConfig,
        *registered,
    ]


def test_every_duration_field_is_finite_bounded_and_positive_where_zero_means_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.undo()
    seen: set[str] = set()
    for model in _config_models():
        for name, adapter in _duration_fields(model):
            seen.add(name)
            for too_long in (OVERFLOWING, "3661d" if name == "history_retention" else "367d"):
                with pytest.raises(ValidationError):
                    adapter.validate_python(too_long)
            if name in ZERO_ALLOWED:
                adapter.validate_python("0s")
            else:
                with pytest.raises(ValidationError):
                    adapter.validate_python("0s")
    assert {"interval", "timeout", "stale_after", "verify_within", "window"} <= seen


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.1, "100ms"),
        (0.0005, "0.5ms"),
        (1.5, "1.5s"),
        (90, "1m30s"),
        (5400, "1h30m"),
        (366 * 86400, "366d"),
        (86400 + 0.25, "1d0.25s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["500%", "101%", "-1%", "nan", "inf", "1e400%", 1.5, float("nan"), float("inf")]
)
def test_ratio_range(value: object) -> None:
    with pytest.raises(ValueError, match="not a ratio"):
        parse_ratio(value)


# --- hostile input (more in tests/*/test_hostile_*.py) ------------------------------------------


def test_a_secret_value_is_never_quoted_in_a_problem() -> None:
    # The rule's message quotes what it was given; the text was pasted from a secret field.
    text = """\
checks:
  api: {type: test_probe, token: tok-3f9a2c7e1b}
rules:
  r: {when: api.up < tok-3f9a2c7e1b}
  s: {when: "api.up < postgresql://u:hunter2@db/x"}
  t: {when: "api.up < host=db password='hunter2 x'"}
"""
    problems = problems_of(text)
    assert [p.split(": not a threshold: ")[1].split(" (")[0] for p in problems] == [
        "'***'",
        "'postgresql://u:***@db/x'",
        '"host=db password=***"',
    ]


@pytest.mark.usefixtures("either_parser")
@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("yes", "yes"),
        ("on", "on"),
        ("1:30", "1:30"),
        ("2024-01-01", "2024-01-01"),
        ("017", 17),
        ("0o17", 15),
        ("0x1f", 31),
        ("1_000", "1_000"),
        ("true", True),
        ("False", False),
        ("~", None),
        ("-1.5e3", -1500.0),
        (".inf", float("inf")),
    ],
)
def test_scalars_are_yaml_1_2(scalar: str, value: object) -> None:
    reader = config_reader.Reader("c.yaml")
    assert reader.read(f"x: {scalar}\n") == {"x": value}


def test_shipped_configs_read_as_yaml_1_1_read_them() -> None:
    """No value of the shipped configs changes meaning under YAML 1.2."""
    for path in sorted((ROOT / "config").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        literal = text.replace("$", "$$")  # ${ENV} as written, as safe_load leaves it
        assert config_reader.Reader(str(path)).read(literal) == yaml.safe_load(text), path


# --- booleans are not numbers ----------------------------------------------------------------


class _Counts(StrictModel):
    class Limit(StrictModel):
        count: int = 1

    n: int = 0
    x: float = 0.0
    maybe: int | None = None
    either: float | str = 0.0
    many: tuple[int, ...] = ()
    limit: Limit = Limit()
    flag: bool = False
    flag_or_count: bool | int = 0


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"n": True}, ("n",)),
        ({"x": False}, ("x",)),
        ({"maybe": True}, ("maybe",)),
        ({"either": True}, ("either",)),
        ({"many": [1, True]}, ("many", 1)),
        ({"limit": {"count": True}}, ("limit", "count")),
    ],
)
def test_a_boolean_is_not_a_number(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        _Counts.model_validate(data)
    [error] = info.value.errors()
    assert error["loc"] == loc
    assert error["msg"].endswith(f"expected a number, not {str(error['input']).lower()}")


def test_booleans_stay_where_a_boolean_is_wanted() -> None:
    counts = _Counts.model_validate({"flag": True, "flag_or_count": True, "n": 3, "x": 2})
    assert (counts.flag, counts.flag_or_count, counts.n, counts.x) == (True, True, 3, 2.0)


def test_min_samples_true_is_refused_at_its_line() -> None:
    text = "checks:\n  api: {type: test_probe}\nrules:\n  r:\n    when: api.up < 1\n"
    assert problems_of(text + "    min_samples: true\n") == [
        "c.yaml:6 rules.r.min_samples: expected a number, not true"
    ]


def test_the_api_connection_limits_are_settings() -> None:
    from daemon.api.app import http_limits
    from daemon.api.servers import HttpLimits

    text = "runbookd:\n  api: {header_timeout: 2s, idle_timeout: 5m, max_connections: 64}\n"
    limits = http_limits(load_config_text(text, "c.yaml").runbookd.api)
    assert limits == HttpLimits(header_timeout=2.0, idle_timeout=300.0, max_connections=64)
    with pytest.raises(ConfigError) as info:
        load_config_text("runbookd:\n  api: {max_connections: 4, body_timeout: 0s}\n", "c.yaml")
    assert [str(p) for p in info.value.problems] == [
        "c.yaml:2 runbookd.api.body_timeout: must be more than 0s, not 0s",
        "c.yaml:2 runbookd.api.max_connections: input should be greater than or equal to 16",
    ]
