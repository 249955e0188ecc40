"""Check-worker processes (runbookd.check_processes): real child processes, a real HTTP app on
loopback, the whole daemon. Waits are bounded (tests/utils.wait_for); a worker's schedule runs
on the system clock, since a clock cannot be moved in another process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.runtime import check_workers
from daemon.runtime.check_frames import encode_command
from daemon.runtime.daemon import Daemon
from tests.paths import ROOT
from tests.utils import read_until, run_daemon, wait_for

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  check_processes: {processes}
checks:
  health:
    type: http
    url: {url}/health
    interval: 100ms
    timeout: 1s
    stale_after: 1500ms
  posted:
    type: http
    method: POST
    url: {url}/health
    interval: 100ms
    timeout: 1s
rules:
  down:
    when: health.up < 1
    do: [notify]
remediations:
  notify:
    type: http
    url: {url}/hook
    body: {{incident: "{{{{ incident.id }}}}"}}
"""


def write(tmp_path: Path, url: str, processes: int | str = 1, extra: str = "") -> Path:
    path = tmp_path / "runbookd.yaml"
    text = CONFIG.format(state=tmp_path / "state", url=url, processes=processes)
    path.write_text(text + extra)
    return path


def sample(daemon: Daemon, name: str, labels: dict[str, str] | None = None) -> float | None:
    return daemon.registry.get_sample_value(name, labels or {})


def worker_pids(daemon: Daemon) -> list[int]:
    remote = daemon.scheduler.remote
    assert isinstance(remote, check_workers.CheckWorkers)
    return [p.pid for p in remote.procs if p is not None and p.returncode is None]


async def test_remote_runs_reach_the_engine_metrics_and_readiness(
    tmp_path: Path, app_state: tuple[dict[str, object], str]
) -> None:
    state, url = app_state
    async with run_daemon(write(tmp_path, url)) as daemon:
        jobs = daemon.scheduler.jobs
        assert jobs["health"].worker == 0
        assert jobs["posted"].worker is None  # a POST is not the lean client's: it stays here
        await wait_for(lambda: daemon.first_round() == (2, 2))
        assert daemon.ready() == (True, "ok")
        await wait_for(lambda: jobs["health"].runs >= 3)
        runs = sample(daemon, "runbookd_check_runs_total", {"check": "health", "status": "ok"})
        assert runs is not None
        assert runs >= 3
        lateness = sample(daemon, "runbookd_schedule_lateness_seconds_count")
        assert lateness is not None
        assert lateness >= runs
        late = sample(daemon, "runbookd_schedule_lateness_seconds_sum")
        assert late is not None
        assert late / lateness < 0.5  # started - due, from the worker's times: sane
        assert sample(daemon, "runbookd_check_workers_running") == 1
        state["up"] = False
        await wait_for(lambda: bool(state.get("hooks")))
        assert daemon.engine.incidents
        state["up"] = True
        await wait_for(lambda: not daemon.engine.incidents)


async def test_in_process_when_zero(
    tmp_path: Path, app_state: tuple[dict[str, object], str]
) -> None:
    _, url = app_state
    async with run_daemon(write(tmp_path, url, processes=0)) as daemon:
        assert daemon.scheduler.remote is None
        assert all(job.worker is None for job in daemon.scheduler.jobs.values())
        await wait_for(lambda: daemon.first_round() == (2, 2))


def test_auto_is_in_process_below_the_threshold() -> None:
    assert check_workers.resolve("auto", []) == 0
    assert check_workers.resolve(3, []) == 3


def all_pids(daemon: Daemon) -> list[int]:
    remote = daemon.scheduler.remote
    assert isinstance(remote, check_workers.CheckWorkers)
    return [p.pid for p in remote.procs if p is not None]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_run_now_and_a_stop_that_leaves_no_worker(
    tmp_path: Path, app_state: tuple[dict[str, object], str]
) -> None:
    _, url = app_state
    slow = f"  slow: {{type: http, url: '{url}/health', interval: 1h, jitter: 0}}\n"
    path = write(tmp_path, url)
    path.write_text(path.read_text().replace("rules:\n", slow + "rules:\n"))
    async with run_daemon(path) as daemon:
        job = daemon.scheduler.jobs["slow"]
        assert job.worker == 0
        await wait_for(lambda: job.runs == 1)
        assert daemon.observed.run_now("slow")
        await wait_for(lambda: job.runs == 2)
        assert not daemon.observed.run_now("nope")
        pids = all_pids(daemon)
        assert len(pids) == 1
    assert all(gone(pid) for pid in pids)


async def test_a_reload_moves_no_check_and_reaches_every_worker(
    tmp_path: Path, app_state: tuple[dict[str, object], str]
) -> None:
    _, url = app_state
    line = "  c{i}: {{type: http, url: '{url}/health', interval: {every}}}\n"

    def config(numbers: range, changed: int) -> Path:
        checks = "".join(
            line.format(i=i, url=url, every="200ms" if i == changed else "100ms") for i in numbers
        )
        path = write(tmp_path, url, processes=2)
        path.write_text(path.read_text().replace("rules:\n", checks + "rules:\n"))
        return path

    path = config(range(6), changed=-1)
    async with run_daemon(path) as daemon:
        jobs = daemon.scheduler.jobs
        placed = {name: job.worker for name, job in jobs.items() if name.startswith("c")}
        assert placed == {n: zlib.crc32(n.encode()) % 2 for n in placed}
        assert set(placed.values()) == {0, 1}  # both workers have checks
        await wait_for(lambda: all(jobs[n].runs > 0 for n in placed))
        kept = jobs["c3"]
        config(range(1, 8), changed=2)
        assert await daemon.reload()
        jobs = daemon.scheduler.jobs
        assert "c0" not in jobs
        assert jobs["c3"] is kept  # unchanged: the same job, on the same worker
        assert jobs["c2"].config.interval == 0.2
        assert {jobs[n].worker for n in ("c6", "c7")} <= {0, 1}
        await wait_for(lambda: jobs["c6"].runs > 0 and jobs["c7"].runs > 0 and jobs["c2"].runs > 0)
        assert sample(daemon, "runbookd_check_runs_total", {"check": "c0", "status": "ok"}) is None


async def test_a_killed_worker_is_loud_its_rules_go_blind_not_down_and_it_comes_back(
    tmp_path: Path, app_state: tuple[dict[str, object], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = app_state
    # Long enough that `health` (stale after 1.5 s) goes stale before the worker is back.
    monkeypatch.setattr(check_workers, "FIRST_BACKOFF", 3.0)
    blind = {"rule": "down"}
    with capture_logs() as logs:
        async with run_daemon(write(tmp_path, url)) as daemon:
            job = daemon.scheduler.jobs["health"]
            await wait_for(lambda: job.runs > 0)
            (pid,) = worker_pids(daemon)
            os.kill(pid, signal.SIGKILL)
            await wait_for(lambda: sample(daemon, "runbookd_rule_blind", blind) == 1, within=10)
            assert not daemon.engine.incidents  # missing data is not bad data
            assert job.last_status is not None
            assert job.last_status.name == "OK"
            failed = [e for e in logs if e["event"].startswith("check worker failed")]
            assert failed[0]["exit_code"] == -signal.SIGKILL
            assert failed[0]["log_level"] == "error"
            restarts = {"worker": "0"}
            assert sample(daemon, "runbookd_check_worker_restarts_total", restarts) == 1
            runs = job.runs
            await wait_for(lambda: job.runs > runs, within=10)
            await wait_for(lambda: sample(daemon, "runbookd_rule_blind", blind) == 0)
            assert worker_pids(daemon) != [pid]
            assert not daemon.engine.incidents


GARBAGE = (
    "import sys, time; sys.stdout.buffer.write(b'\\x00\\x00\\x00\\x03abc');"
    " sys.stdout.flush(); time.sleep(60)"
)


async def test_a_bad_frame_is_refused_loudly_and_the_worker_replaced(
    tmp_path: Path, app_state: tuple[dict[str, object], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = app_state
    monkeypatch.setattr(check_workers, "FIRST_BACKOFF", 0.1)
    with capture_logs() as logs:
        async with run_daemon(write(tmp_path, url)) as daemon:
            remote = daemon.scheduler.remote
            assert isinstance(remote, check_workers.CheckWorkers)
            real = remote._argv
            remote._argv = (sys.executable, "-c", GARBAGE)
            (pid,) = worker_pids(daemon)
            os.kill(pid, signal.SIGKILL)  # its next start runs the garbage writer

            def refused() -> list[dict[str, Any]]:
                return [e for e in logs if str(e.get("reason", "")).startswith("bad frame")]

            await wait_for(lambda: bool(refused()))
            assert refused()[0]["exit_code"] == -signal.SIGKILL  # killed: not trusted again
            remote._argv = real
            job = daemon.scheduler.jobs["health"]
            runs = job.runs
            await wait_for(lambda: job.runs > runs)
            restarts = {"worker": "0"}
            assert sample(daemon, "runbookd_check_worker_restarts_total", restarts) == 2


def test_a_worker_exits_when_its_stdin_closes() -> None:
    """The daemon died: nothing is left to read the worker's results."""
    argv = [sys.executable, "-m", "daemon.runtime.check_worker", "info", "4"]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT) as proc:
        assert proc.stdin is not None
        proc.stdin.write(encode_command(("checks", {})))
        proc.stdin.close()
        assert proc.wait(timeout=15) == 0


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(p) for p in text}
    return found


def test_sigterm_of_runbookd_run_leaves_no_worker(
    tmp_path: Path, app_state: tuple[dict[str, object], str]
) -> None:
    _, url = app_state
    path = write(tmp_path, url)
    argv = [sys.executable, "-m", "daemon.cli", "run", "--config", str(path)]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    ) as proc:
        try:
            read_until(proc, '"started"')
            deadline = time.monotonic() + 10
            while not (workers := children(proc.pid)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(workers) == 1
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=15)
            assert proc.returncode == 0, out[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert all(gone(pid) for pid in workers)


async def test_runs_a_worker_skips_are_counted_here(
    tmp_path: Path, app_state: tuple[dict[str, object], str], silent_port: int
) -> None:
    """A run that outlasts its interval in the worker: the next is skipped, and counted here."""
    _, url = app_state
    stuck = (
        f"  stuck: {{type: http, url: 'http://127.0.0.1:{silent_port}/', interval: 100ms,"
        " timeout: 500ms}\n"
    )
    path = write(tmp_path, url)
    path.write_text(path.read_text().replace("rules:\n", stuck + "rules:\n"))
    async with run_daemon(path) as daemon:
        job = daemon.scheduler.jobs["stuck"]
        assert job.worker == 0

        def skips() -> float:
            return sample(daemon, "runbookd_check_runs_skipped_total", {"check": "stuck"}) or 0.0

        await wait_for(lambda: skips() > 0)
        await wait_for(lambda: job.runs > 0)
        failed = {"check": "stuck", "status": "critical"}
        assert sample(daemon, "runbookd_check_runs_total", failed) == job.runs
