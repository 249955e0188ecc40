"""The container image's outputs: the wheel built from exactly the files the Dockerfile copies,
and its HEALTHCHECK command run against a real daemon."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.dockerfile import Stage, copied_sources, dockerignore_patterns, excluded, image_stages
from tests.paths import ROOT
from tests.utils import free_port, run_daemon

PORT = "9464"


# --- a small Dockerfile parser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return image_stages()


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


def test_the_wheel_ships_the_consoles_templates_and_files(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for name in ("base.html", "overview.html", "incident.html", "silences.html", "status.html"):
        assert f"daemon/ui/templates/{name}" in names
    assert {"daemon/ui/static/console.js", "daemon/ui/static/console.css"} <= names
    script = wheel.getinfo("daemon/ui/static/console.js").file_size
    assert script < 50 * 1024  # the JavaScript a console page loads, all of it


def test_the_wheel_ships_the_demo_configs(wheel: zipfile.ZipFile) -> None:
    for config in ("demo.yaml", "demo-deploy.yaml"):
        assert [name for name in wheel.namelist() if name.endswith(f"/share/runbookd/{config}")]
