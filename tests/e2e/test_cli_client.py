"""`runbookd incidents` and `runbookd silence` against a real daemon: tables, --json, tokens,
and exit codes (0 ok, 1 the API refused, 2 usage or no daemon)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from tests.cli_daemon import TOKEN, cli_daemon
from tests.utils import free_port


@pytest.fixture
async def url(
    tmp_path: Path, app_state: tuple[dict[str, object], str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    with structlog.testing.capture_logs():  # the daemon's log lines, out of the test's output
        async with cli_daemon(tmp_path, app_state[1]) as daemon:
            monkeypatch.setenv("RUNBOOKD_TOKEN", TOKEN)
            yield f"http://127.0.0.1:{daemon.port}"


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
