"""Hostile configs: each is refused by `runbookd check-config` with exit 2 and FILE:LINE
problems, quickly and in little memory, never with a traceback, a hang or a MemoryError.

Each case runs the real command in a subprocess under a time limit and an address-space
limit (RLIMIT_AS), so a regression fails fast instead of taking the machine's memory.
The files in configs/ say what they expect in `# expect:` lines, as tests/bad_configs do;
the cases that cannot be a small file (a huge file, /dev/zero, a FIFO) are made here.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.config.loader import MAX_CONFIG_BYTES
from daemon.core.units import MAX_SECRET_FILE
from tests import paths
from tests.paths import ROOT

CONFIGS = paths.HOSTILE_CONFIGS
# check-config of a good config takes about 0.3 s; a merge bomb took 9 s before its bound.
TIME_LIMIT = 5.0
# Python with pydantic and yaml maps a few hundred MB; the 4 MiB file once took 4 GB.
MEMORY_LIMIT = 1 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def check_config(path: Path | str) -> tuple[int, list[str]]:
    """Exit status and stderr lines of `runbookd check-config PATH`, within the limits."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "check-config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT * 4,  # a hang fails here rather than never
        preexec_fn=_limit_memory,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    elapsed = time.monotonic() - start
    assert elapsed < TIME_LIMIT, f"took {elapsed:.1f}s: {done.stderr[-500:]}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stderr.splitlines()


def expected(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    prefix = "# expect: "
    return [
        line.removeprefix(prefix).replace("{file}", str(path))
        for line in lines
        if line.startswith(prefix)
    ]


def test_a_good_config_passes_within_the_limits() -> None:
    status, err = check_config(ROOT / "config" / "runbookd.example.yaml")
    assert (status, err) == (0, [])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_hostile_config(path: Path) -> None:
    assert expected(path), f"{path.name} has no '# expect:' lines"
    assert check_config(path) == (2, expected(path))


def test_a_config_larger_than_the_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as out:  # list items: once 52 s and 4 GB at 50 MB
        out.write("checks:\n")
        out.write("- x\n" * (MAX_CONFIG_BYTES // 4 + 1))
    size = path.stat().st_size
    assert check_config(path) == (
        2,
        [f"{path}:0 file: too large: {size:,} bytes, at most 4 MiB allowed"],
    )


def test_many_nodes_under_the_size_limit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "flat.yaml"
    path.write_text("checks: [" + ",".join(["1"] * 1_000_000) + "]\n")
    assert check_config(path) == (2, [f"{path}:1 yaml: too large: more than 250,000 YAML nodes"])


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda tmp: Path("/dev/zero"), "a character device"),
        (lambda tmp: tmp, "a directory"),
        (lambda tmp: _fifo(tmp / "fifo"), "a FIFO"),
    ],
    ids=["dev-zero", "directory", "fifo"],
)
def test_only_a_regular_file_is_read_as_a_config(make: Any, kind: str, tmp_path: Path) -> None:
    path = make(tmp_path)
    assert check_config(path) == (2, [f"{path}:0 file: not a regular file ({kind})"])


def _fifo(path: Path) -> Path:
    os.mkfifo(path)  # nobody writes: reading it would block for ever
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda tmp: Path("/dev/zero"), "not a regular file (a character device)"),
        (lambda tmp: _fifo(tmp / "fifo"), "not a regular file (a FIFO)"),
        (lambda tmp: tmp, "not a regular file (a directory)"),
        (
            lambda tmp: _big(tmp / "big"),
            f"too large: {MAX_SECRET_FILE + 1:,} bytes, at most 64 KiB allowed",
        ),
        (lambda tmp: _latin1(tmp / "latin1"), "not UTF-8"),
    ],
    ids=["dev-zero", "fifo", "directory", "too-large", "not-utf8"],
)
def test_a_secret_file_is_a_small_regular_file(make: Any, problem: str, tmp_path: Path) -> None:
    secret = make(tmp_path)
    config = tmp_path / "runbookd.yaml"
    config.write_text(
        "checks:\n"
        "  db:\n"
        "    type: postgres\n"
        "    dsn: postgresql://monitor@127.0.0.1:5432/app\n"
        f"    password_file: {secret}\n"
    )
    assert check_config(config) == (
        2,
        [f"{config}:5 checks.db.password_file: {secret}: {problem}"],
    )


def _big(path: Path) -> Path:
    path.write_bytes(b"x" * (MAX_SECRET_FILE + 1))
    return path


def _latin1(path: Path) -> Path:
    path.write_bytes("caf\xe9".encode("latin-1"))
    return path
