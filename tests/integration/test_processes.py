"""A child cut short by a cancellation (a stop, a check given up on) is killed with its group
and reaped before the caller goes on: nothing runs on, and nothing is left for the event
loop's close to find."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from daemon.clients.processes import run_process


async def test_a_cancelled_run_kills_and_reaps_its_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # The shell writes its pid, then waits on a child: the whole group must go.
    task = asyncio.create_task(
        run_process(["sh", "-c", f"echo $$ > {pid_file}; sleep 30"], term_after=60.0)
    )
    for _ in range(500):  # bounded: until the child has started
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.01)
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Reaped: the pid no longer names a process, not even a zombie.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
