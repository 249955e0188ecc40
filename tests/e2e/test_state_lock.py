"""One daemon per SQLite state directory, with real processes: a second `runbookd run` on the
directory exits 2 at once, naming it and the first one's pid; `runbookd once` is not held
back; once the first has stopped, the directory is free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon.runtime.daemon import ExitCode
from tests.paths import ROOT
from tests.utils import free_port, read_until

# The check asks the first daemon's own /healthz: `once` then sees it OK while it runs.
CONFIG = """
runbookd:
  listen: 127.0.0.1:{port}
  state_dir: {state}
checks:
  health: {{type: http, url: "http://127.0.0.1:{port}/healthz", interval: 1s, timeout: 2s}}
"""


def runbookd(*args: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", *args]


@contextmanager
def running(config: Path) -> Iterator[subprocess.Popen[str]]:
    """`runbookd run`, started (its "started" line seen); stopped with SIGTERM after."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        runbookd("run", "--config", str(config)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    ) as proc:
        try:
            read_until(proc, '"event": "started"')
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "runbookd.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", port=free_port()))
    return path


def test_a_second_daemon_on_the_state_directory_exits_2_naming_the_first(
    config: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with running(config) as first:
        started = time.monotonic()
        second = subprocess.run(
            runbookd("run", "--config", str(config)),
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        took = time.monotonic() - started
        assert second.returncode == ExitCode.STATE_DIR_IN_USE == 2, second.stderr
        assert second.stderr == (
            f"runbookd: could not start: the state directory {state} is in use by another "
            f"runbookd (pid {first.pid}): one daemon per state directory\n"
        )
        assert second.stdout == ""
        assert took < 10, f"took {took:.2f}s to exit"
        # `once` never opens the store: the lock does not hold it back.
        once = subprocess.run(
            runbookd("once", "--config", str(config)),
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        assert once.returncode == 0, once.stderr
        assert once.stdout.splitlines()[1].startswith("health  OK")
        assert first.poll() is None  # the first runs on, untouched
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
    # The first has stopped: the directory is free for the next.
    with running(config) as third:
        assert third.poll() is None
        assert (state / "runbookd.lock").read_text() == f"{third.pid}\n"
