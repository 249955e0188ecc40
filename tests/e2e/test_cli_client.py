"""`runbookd incidents` and `runbookd silence` against a real daemon: tables, --json, tokens,
and exit codes (0 ok, 1 the API refused, 2 usage or no daemon)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from daemon.runtime.daemon import Daemon
from tests.utils import free_port, run_daemon

TOKEN = "cli-test-token-0123456789"

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  drain_grace: 1s
  api:
    tokens:
      - name: ops
        token: {token}
        scope: write
checks:
  health:
    type: http
    url: {url}/health
    interval: 100ms
    timeout: 1s
rules:
  down:
    when: health.up < 1
    do: [fix]
remediations:
  fix:
    type: http
    url: {url}/hook
    body: {{step: fix}}
"""

State = dict[str, object]


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    """The daemon's log lines would land in the command's captured output."""
    with structlog.testing.capture_logs():
        yield


@pytest.fixture
async def daemon(tmp_path: Path, app_state: tuple[State, str]) -> AsyncIterator[Daemon]:
    path = tmp_path / "runbookd.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", url=app_state[1], token=TOKEN))
    async with run_daemon(path) as running:
        yield running


@pytest.fixture
def url(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RUNBOOKD_TOKEN", TOKEN)
    return f"http://127.0.0.1:{daemon.port}"


async def test_the_real_process(url: str) -> None:
    """The command as a process: output, exit codes, one line on error, never a traceback."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    outputs = []
    for argv, code in [
        (["incidents", "--json", "--url", url], 0),
        (["incidents", "show", "inc-nope", "--url", url], 1),
        (["incidents", "--url", nowhere], 2),
    ]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon.cli",
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == code, (argv, err)
        assert len(err.splitlines()) == (0 if code == 0 else 1), err
        outputs.append(out)
    assert json.loads(outputs[0]) == {"incidents": []}
