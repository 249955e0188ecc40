"""The container image, checked without a container engine: the Dockerfile's instructions as
Docker parses them, the build context .dockerignore leaves, the wheel built from exactly the
files the Dockerfile copies, and its HEALTHCHECK command run against a real daemon."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.paths import ROOT
from tests.utils import free_port, run_daemon

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PORT = "9464"


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


async def test_healthcheck_command_passes_on_a_live_daemon_and_fails_without_one(
    dockerfile: list[Stage], tmp_path: Path
) -> None:
    _, _, command = dockerfile[-1].last("HEALTHCHECK").args.partition(" ")
    _, flag, code = json.loads(command)
    config = tmp_path / "runbookd.yaml"
    config.write_text(f"runbookd:\n  listen: 127.0.0.1:0\n  state_dir: {tmp_path / 'state'}\n")

    async def probe(port: int) -> int:
        # In a subprocess, as Docker runs it: the daemon's event loop must stay free to answer.
        script = code.replace(f":{PORT}/", f":{port}/")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, flag, script, stderr=asyncio.subprocess.DEVNULL
        )
        return await asyncio.wait_for(proc.wait(), 30)

    async with run_daemon(config) as daemon:
        assert daemon.port is not None
        assert await probe(daemon.port) == 0
    # Docker reads 1 as unhealthy; 2 is reserved.
    assert await probe(free_port()) == 1


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


def build_context(dockerfile: list[Stage], into: Path) -> None:
    """Copy what the build stage's COPY instructions would see into `into`."""
    patterns = dockerignore_patterns()
    for source in copied_sources(dockerfile[0]):
        for path in ROOT.glob(source.rstrip("/")):
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if not excluded(relative, patterns):
                    (into / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, into / relative)


@pytest.fixture(scope="module")
def wheel(dockerfile: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The runbookd wheel, built like the build stage does, from its build context alone.

    pip fetches the build backend (setuptools>=77) from the package index, as in the image.
    """
    context = tmp_path_factory.mktemp("context")
    out = tmp_path_factory.mktemp("wheels")
    build_context(dockerfile, context)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("runbookd-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_builds_from_the_copied_files_alone(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    for package in ("daemon", "checks", "remediations"):
        assert f"{package}/__init__.py" in names
        assert f"{package}/py.typed" in names
    assert not [name for name in names if "__pycache__" in name or name.startswith("tests/")]
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "runbookd = daemon.cli.main:main" in wheel.read(entry_points).decode()


def test_the_wheel_ships_the_demo_config(wheel: zipfile.ZipFile) -> None:
    assert [name for name in wheel.namelist() if name.endswith("demo.yaml")]
