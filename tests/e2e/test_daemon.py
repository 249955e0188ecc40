"""The daemon as a process: `runbookd run` answering SIGHUP and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.health_config import write_config
from tests.utils import read_until


@pytest.fixture
def config_file(tmp_path: Path, app_state: tuple[dict[str, object], str]) -> Path:
    return write_config(tmp_path, app_state[1])


def test_sighup_with_a_bad_config_keeps_running_and_sigterm_exits_0(config_file: Path) -> None:
    """The real process: signals, reload refusal, graceful exit code."""
    argv = [sys.executable, "-m", "daemon.cli", "run", "--config", str(config_file)]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as proc:
        try:
            read_until(proc, '"event": "started"')
            config_file.write_text("checks: [not, a, mapping\n")
            proc.send_signal(signal.SIGHUP)
            refused = read_until(proc, "reload refused")
            assert "keeping the running config" in refused
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            assert "stopped" in read_until(proc, '"event": "stopped"')
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
