"""When starting or running fails: a start that cannot finish closes what it opened and exits
at once with one line; a core task that dies makes the daemon unhealthy, and it exits non-zero.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from daemon.config.loader import load_config
from daemon.pipeline.outbox import Outbox
from daemon.runtime.daemon import Daemon, ExitCode
from daemon.runtime.scheduler import Scheduler
from daemon.runtime.sdnotify import Notifier
from tests.lifecycle import WAIT, write_config
from tests.paths import ROOT
from tests.utils import free_port

# --- a start that fails -----------------------------------------------------------------------


def run_cli(config: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """`runbookd run` as a process; returns it finished, and how long it took."""
    argv = [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT, cwd=ROOT)
    return done, time.monotonic() - started


def test_a_taken_port_exits_at_once_with_one_line(
    tmp_path: Path, app_state: tuple[dict[str, object], str], taken_port: int
) -> None:
    done, took = run_cli(write_config(tmp_path, app_state[1], port=taken_port))
    assert done.returncode == ExitCode.START_FAILED == 3, done.stderr
    assert done.stderr == (
        f"runbookd: could not start: cannot listen on 127.0.0.1:{taken_port}: "
        "Address already in use\n"
    )
    assert "Traceback" not in done.stdout
    # Python's own start and the imports included; the daemon's part is a small fraction.
    assert took < 10, f"took {took:.2f}s to exit"
    print(f"a failed start exited after {took:.2f}s")


@pytest.mark.parametrize(
    ("make_state", "reason"),
    [
        # A file where the state directory should be: it cannot be created, nor its lock.
        (
            lambda tmp: (tmp / "state").write_text("x") and tmp / "state",
            "cannot lock the state directory {state}: File exists: {state}",
        ),
        # A directory where the database file should be: SQLite, on its own thread, refuses.
        (
            lambda tmp: (tmp / "state" / "runbookd.db").mkdir(parents=True) or tmp / "state",
            "cannot open the store {state}/runbookd.db: unable to open database file",
        ),
        # Under /proc nothing can be created, not even by root.
        (
            lambda tmp: Path("/proc/runbookd-test"),
            "cannot lock the state directory {state}: No such file or directory: {state}",
        ),
    ],
    ids=["state-dir-is-a-file", "database-is-a-directory", "state-dir-cannot-be-created"],
)
def test_a_store_that_cannot_open_exits_at_once_with_one_line(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    make_state: Callable[[Path], Path],
    reason: str,
) -> None:
    state = make_state(tmp_path)
    done, took = run_cli(write_config(tmp_path, app_state[1], state=state))
    assert done.returncode == ExitCode.START_FAILED, done.stderr
    assert done.stderr == f"runbookd: could not start: {reason.format(state=state)}\n"
    assert took < 10, f"took {took:.2f}s to exit"


def test_a_postgres_store_that_cannot_be_reached_exits_at_once_naming_where(
    tmp_path: Path, app_state: tuple[dict[str, object], str]
) -> None:
    path = write_config(tmp_path, app_state[1])
    port = free_port()
    dsn = f"postgresql://runbookd:hunter2-secret@127.0.0.1:{port}/runbookd"
    path.write_text(
        path.read_text().replace(
            "runbookd:\n", f"runbookd:\n  store: {{type: postgres, dsn: '{dsn}'}}\n", 1
        )
    )
    done, took = run_cli(path)
    assert done.returncode == ExitCode.START_FAILED, done.stderr
    assert done.stderr == (
        "runbookd: could not start: cannot open the store: PostgreSQL at "
        f"runbookd@127.0.0.1:{port}/runbookd: Connection refused\n"
    )
    assert "hunter2" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout
    assert took < 10, f"took {took:.2f}s to exit"


async def dies(*args: object) -> None:
    raise RuntimeError("injected")


async def returns(*args: object) -> None:
    return None


Core = Callable[..., Coroutine[Any, Any, None]]
CORE_TASKS: list[tuple[str, type, str, Core, str]] = [
    ("scheduler", Scheduler, "_loop", dies, "raised RuntimeError: injected"),
    ("check-worker-0", Scheduler, "_worker", returns, "returned"),
    ("engine-tick", Daemon, "_tick", dies, "raised RuntimeError: injected"),
    ("outbox", Outbox, "run", returns, "returned"),
    ("sd-watchdog", Notifier, "_watchdog", dies, "raised RuntimeError: injected"),
    ("sd-ready", Notifier, "_announce", returns, "returned"),
]


@pytest.mark.parametrize(
    ("task", "owner", "method", "fault", "how"), CORE_TASKS, ids=[c[0] for c in CORE_TASKS]
)
async def test_any_core_task_that_ends_stops_the_daemon(
    tmp_path: Path,
    app_state: tuple[dict[str, object], str],
    monkeypatch: pytest.MonkeyPatch,
    serving: None,
    task: str,
    owner: type,
    method: str,
    fault: Core,
    how: str,
) -> None:
    """One mechanism for all of them: raising or returning, each is the daemon's failure."""
    monkeypatch.setattr(owner, method, fault)
    path = write_config(tmp_path, app_state[1])
    daemon = Daemon(load_config(path), config_path=path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(tmp_path / "notify.sock"))
        environ = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"}
        daemon.notifier = Notifier(environ)
        code = await asyncio.wait_for(daemon.serve(), WAIT)
    assert code == ExitCode.CORE_TASK_DIED
    assert daemon.supervisor.failure == f"core task {task} {how}"
