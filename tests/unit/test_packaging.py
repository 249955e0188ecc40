"""The container image, checked without a container engine: the Dockerfile's instructions as
Docker parses them, and the build context .dockerignore leaves."""

from __future__ import annotations

import json
import re
import shlex
import tomllib

import pytest

from daemon.cli.main import _parser as cli_parser
from tests.dockerfile import (
    Stage,
    copied_sources,
    dockerignore_patterns,
    excluded,
    image_stages,
    parse_dockerfile,
)
from tests.paths import ROOT

BASE_IMAGE = "python:3.11-slim-bookworm"
UID = "10001"
PORT = "9464"
CONFIG = "/etc/runbookd/runbookd.yaml"
STATE = "/var/lib/runbookd"


# --- a small Dockerfile parser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return image_stages()


def test_parser_reads_continuations_flags_and_exec_form() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "FROM base AS build\n"
        "RUN --mount=type=bind,from=build,target=/w \\\n"
        "    # a comment inside a continuation is dropped\n"
        "    echo a \\\n"
        "    && echo b\n"
        'CMD ["run", "--config", "/x.yaml"]\n'
        "ENTRYPOINT runbookd run\n"
    )
    build, run, cmd, entrypoint = parse_dockerfile(text)
    assert (build.keyword, build.args, build.line) == ("FROM", "base AS build", 2)
    assert run.flags == {"mount": "type=bind,from=build,target=/w"}
    assert run.args == "echo a && echo b"
    assert cmd.exec_form == ["run", "--config", "/x.yaml"]
    assert entrypoint.exec_form is None


# --- the Dockerfile ---------------------------------------------------------------------------


def test_two_stages_on_the_pinned_slim_base(dockerfile: list[Stage]) -> None:
    assert len(dockerfile) == 2
    assert [stage.base for stage in dockerfile] == [BASE_IMAGE, BASE_IMAGE]
    assert dockerfile[0].name == "build"


def test_the_build_stage_builds_wheels_the_final_stage_installs_offline(
    dockerfile: list[Stage],
) -> None:
    build, final = dockerfile
    assert any("pip wheel --wheel-dir /wheels ." in run.args for run in build.all("RUN"))
    (install,) = [run for run in final.all("RUN") if "pip install" in run.args]
    assert "from=build" in install.flags.get("mount", "")
    assert "python -m venv /opt/runbookd" in install.args
    assert "--no-index --find-links /wheels runbookd" in install.args
    assert not final.all("ADD"), "ADD fetches URLs and unpacks archives: COPY says what it does"


def test_runs_as_a_non_root_user(dockerfile: list[Stage]) -> None:
    final = dockerfile[-1]
    user = final.last("USER").args
    assert user.split(":")[0] == UID  # numeric, so Kubernetes' runAsNonRoot can verify it
    assert any(f"useradd --system --uid {UID}" in run.args for run in final.all("RUN"))
    # Nothing after USER needs root: instructions after it would run as the user.
    after = final.instructions[final.instructions.index(final.last("USER")) :]
    assert not [i for i in after if i.keyword == "RUN"]


def test_entrypoint_is_tini_and_the_command_is_a_valid_runbookd_invocation(
    dockerfile: list[Stage],
) -> None:
    final = dockerfile[-1]
    entrypoint = final.last("ENTRYPOINT").exec_form
    command = final.last("CMD").exec_form
    assert entrypoint == ["/usr/bin/tini", "--", "runbookd"]
    assert any("apt-get install" in run.args and " tini" in run.args for run in final.all("RUN"))
    assert command == ["run", "--config", CONFIG]
    args = cli_parser().parse_args(command)
    assert (args.command, args.config) == ("run", CONFIG)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["runbookd"] == "daemon.cli.main:main"


def test_signals_ports_volumes_and_environment(dockerfile: list[Stage]) -> None:
    final = dockerfile[-1]
    assert final.last("STOPSIGNAL").args == "SIGTERM"
    assert PORT in final.last("EXPOSE").args.replace("/tcp", "").split()
    volumes = final.last("VOLUME").exec_form or final.last("VOLUME").args.split()
    assert sorted(volumes) == ["/etc/runbookd", STATE]
    # A config leaving state_dir at its default ("./state") still writes into the volume.
    assert final.last("WORKDIR").args == STATE
    env = " ".join(i.args for i in final.all("ENV") + final.all("ARG"))
    assert f"RUNBOOKD_CONFIG={CONFIG}" in env
    assert "PYTHONUNBUFFERED=1" in env  # log lines leave the container as they happen
    assert not re.search(r"(TOKEN|PASSWORD|SECRET|_KEY)\w*=", env), "no secrets in the image"


def test_healthcheck_probes_healthz_with_python(dockerfile: list[Stage]) -> None:
    healthcheck = dockerfile[-1].last("HEALTHCHECK")
    kind, _, command = healthcheck.args.partition(" ")
    argv = json.loads(command)
    assert kind == "CMD"
    assert argv[:2] == ["python", "-c"]
    assert f"http://127.0.0.1:{PORT}/healthz" in argv[2]
    assert not {"curl", "wget"} & set(shlex.split(argv[2]))
    assert {"interval", "timeout", "start-period", "retries"} <= healthcheck.flags.keys()


# --- the build context ------------------------------------------------------------------------


def test_dockerignore_keeps_state_secrets_and_local_environments_out() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "state/runbookd.db",
        "config/state/runbookd.db",
        "runbookd.db-wal",
        ".env",
        "daemon/runtime/__pycache__/daemon.cpython-311.pyc",
        "tests/test_daemon.py",
        "runbookd.egg-info/PKG-INFO",
    ):
        assert excluded(path, patterns), path
    for path in ("pyproject.toml", "README.md", "daemon/runtime/daemon.py", "checks/py.typed"):
        assert not excluded(path, patterns), path


def test_every_copied_source_exists_and_is_in_the_build_context(dockerfile: list[Stage]) -> None:
    patterns = dockerignore_patterns()
    sources = [source for stage in dockerfile for source in copied_sources(stage)]
    assert {"pyproject.toml", "README.md", "daemon/", "checks/", "remediations/"} <= set(sources)
    for source in sources:
        assert list(ROOT.glob(source.rstrip("/"))), f"COPY {source}: not in the repository"
        assert not excluded(source.rstrip("/"), patterns), f"COPY {source}: .dockerignored"
