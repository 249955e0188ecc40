"""The container image, checked without a container engine: the Dockerfile's instructions as
Docker parses them, the build context .dockerignore leaves, the wheel built from exactly the
files the Dockerfile copies, and its HEALTHCHECK command run against a real daemon."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field

import pytest

from daemon.cli.main import _parser as cli_parser
from tests.paths import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BASE_IMAGE = "python:3.11-slim-bookworm"
UID = "10001"
PORT = "9464"
CONFIG = "/etc/runbookd/runbookd.yaml"
STATE = "/var/lib/runbookd"


# --- a small Dockerfile parser ---------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY...
    flags: dict[str, str]  # leading --name=value options (COPY --from=build, RUN --mount=...)
    args: str  # the rest, continuation lines joined
    line: int

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of the exec form, or None for the shell form (as Docker decides)."""
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


_FLAG = re.compile(r"--([a-z-]+)(?:=(\S*))?\s*")


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their flags; comments and blank lines dropped, also inside
    continuations (Docker's rule), `\\` continuations joined."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(raw.rstrip()[:-1] if continued else raw.rstrip())
        if continued:
            continue
        keyword, _, rest = " ".join(part.strip() for part in pending).partition(" ")
        pending = []
        flags: dict[str, str] = {}
        while match := _FLAG.match(rest):
            flags[match.group(1)] = match.group(2) or ""
            rest = rest[match.end() :]
        instructions.append(Instruction(keyword.upper(), flags, rest.strip(), start))
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[Stage]:
    result: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            base, _, name = instruction.args.partition(" AS ")
            result.append(Stage(base.strip(), name.strip() or None))
        else:
            assert result, f"line {instruction.line}: {instruction.keyword} before FROM"
            result[-1].instructions.append(instruction)
    return result


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return stages(parse_dockerfile(DOCKERFILE.read_text()))


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


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception "!", regex) per line, as Docker's patternmatcher reads them."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def excluded(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """The last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, regex in patterns:
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negated
    return result


def copied_sources(stage: Stage) -> list[str]:
    """Sources of the stage's COPY instructions from the build context (not --from)."""
    sources = []
    for copy in stage.all("COPY"):
        if "from" not in copy.flags:
            sources += (copy.exec_form or copy.args.split())[:-1]
    return sources


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
