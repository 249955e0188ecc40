"""Check-worker processes: the daemon's plain `http` checks spread over other cores.

One event loop does ~50 us of CPU per plain `http` check run: some 20,000 checks a second
fill a core. With `runbookd.check_processes` > 0, those checks (the ones the lean client serves,
`HttpCheck.remote_ok`) run in that many child processes (check_worker.py), each running the
daemon's own Scheduler on its share; every other check type stays here. A check goes to the
worker its name hashes to, so a reload keeps it where it was. The daemon keeps a Job for every
check, local or remote: results come back through `Scheduler.deliver`, the tail of a local
run, so metrics, status logs, readiness and the engine see every run the same way.

One reader task per worker hands its results to the scheduler one at a time, in the order the
worker wrote them: a check's observations reach the engine one at a time and in order.

A worker that exits, or writes what a worker does not write, is logged at error with its exit
code, counted (`runbookd_check_worker_restarts_total`) and started again after a backoff.
Meanwhile its checks deliver nothing: their rules go blind by the engine's staleness, as for any
check that stops reporting. Nothing is made up for them. A bug in a reader (anything but a
worker's failure) ends its task: a core-task death, loud. Workers exit by themselves when their
stdin closes, so they do not outlive the daemon.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import zlib
from collections.abc import Callable, Collection, Coroutine, Iterable
from pathlib import Path
from typing import Any

import structlog

from checks.base import Check, CheckConfig
from daemon.core.models import Status
from daemon.runtime.check_frames import (
    CHECKS,
    HEADER,
    MAX_FRAME,
    RUN_NOW,
    STOP,
    BadFrame,
    decode_results,
    encode_command,
)
from daemon.runtime.metrics import Metrics
from daemon.runtime.scheduler import Job

log = structlog.get_logger("runbookd.check_workers")

# `check_processes: auto` runs every check here below this many remote-capable checks. At
# 5,000 checks/s one process keeps up (lateness p99 ~24 ms, ~30% of a core) and a worker saves
# no CPU in all (55-66 us per check, the process tree's) while it adds ~75 MB; at 20,000/s one
# process cannot (13,000 runs/s done). 10,000 is between the two; it was not measured itself.
# bench/README.md, "Check-worker processes".
AUTO_THRESHOLD = 10_000

STOP_GRACE = 5.0  # a worker told to stop has this long before it is killed
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STEADY = 60.0  # a worker that ran this long before it died starts again without delay growth

Deliver = Callable[
    [str, Status, dict[str, float], float, float, str, float], Coroutine[Any, Any, None]
]
_STATUSES = tuple(Status)
_ROOT = str(Path(__file__).resolve().parents[2])  # where `daemon` and `checks` are importable


def remote_ok(check: Check) -> bool:
    return bool(getattr(check, "remote_ok", False))


def resolve(setting: int | str, checks: Collection[Check]) -> int:
    """The number of worker processes `runbookd.check_processes` asks for, with these checks."""
    if isinstance(setting, int):
        return setting
    if sum(map(remote_ok, checks)) < AUTO_THRESHOLD:
        return 0
    return max(1, (os.cpu_count() or 1) - 1)


class CheckWorkers:
    def __init__(
        self,
        count: int,
        *,
        deliver: Deliver,
        skipped: Callable[[str], None],
        metrics: Metrics,
        log_level: str,
        max_in_flight: int,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.count = count
        self._deliver = deliver
        self._skipped = skipped
        self._metrics = metrics
        self._argv = (
            sys.executable,
            "-m",
            "daemon.runtime.check_worker",
            log_level,
            str(max_in_flight),
        )
        self._stop_grace = stop_grace
        self._sets: list[dict[str, CheckConfig]] = [{} for _ in range(count)]
        self.procs: list[asyncio.subprocess.Process | None] = [None] * count
        self._stopping = False
        for index in range(count):  # each worker's counter from 0, before any restart
            metrics.check_worker_restarts.labels(str(index))

    # -- what the scheduler asks (scheduler.Remote) ---------------------------------------------

    def place(self, name: str, check: Check) -> int | None:
        if not remote_ok(check):
            return None
        return zlib.crc32(name.encode()) % self.count

    def local_count(self, jobs: dict[str, Job]) -> int:
        return sum(1 for job in jobs.values() if job.worker is None)

    def assign(self, jobs: Iterable[Job]) -> None:
        sets: list[dict[str, CheckConfig]] = [{} for _ in range(self.count)]
        for job in jobs:
            if job.worker is not None:
                sets[job.worker][job.name] = job.config
        for index, checks in enumerate(sets):
            if checks != self._sets[index]:
                self._sets[index] = checks
                self._send(index, (CHECKS, checks))

    def start(self, spawn: Callable[[Coroutine[Any, Any, None], str], None]) -> None:
        for index in range(self.count):
            spawn(self._keep(index), f"check-process-{index}")

    def run_now(self, job: Job) -> bool:
        assert job.worker is not None
        return self._send(job.worker, (RUN_NOW, job.name))

    async def stop(self) -> None:
        """Tell every worker to stop, let it hand over what it has, kill it after the grace."""
        self._stopping = True
        procs = [proc for proc in self.procs if proc is not None and proc.returncode is None]
        for proc in procs:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.write(encode_command((STOP,)))
                proc.stdin.close()
        if not procs:
            return
        waits = [asyncio.ensure_future(proc.wait()) for proc in procs]
        _, late = await asyncio.wait(waits, timeout=self._stop_grace)
        for proc in procs:
            if proc.returncode is None:
                log.error("check worker did not stop in time: killed", pid=proc.pid)
                proc.kill()
        await asyncio.gather(*late, return_exceptions=True)

    # -- each worker's life --------------------------------------------------------------------

    def _send(self, index: int, command: tuple[Any, ...]) -> bool:
        proc = self.procs[index]
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return False  # it is sent its checks when it starts (again)
        if proc.stdin.is_closing():
            return False
        proc.stdin.write(encode_command(command))
        return True

    async def _keep(self, index: int) -> None:
        """Run worker `index`, and start it again whenever it exits, until the daemon stops."""
        delay = FIRST_BACKOFF
        while not self._stopping:
            began = time.monotonic()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=_log_fd(),
                    env=_env(),
                    limit=MAX_FRAME,
                )
            except OSError as exc:  # no fork, no memory, no file descriptor: try again later
                self._metrics.check_worker_restarts.labels(str(index)).inc()
                log.error("check worker cannot start", worker=index, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            self.procs[index] = proc
            if self._stopping:  # stop() ran while it started: it stops at once
                assert proc.stdin is not None
                proc.stdin.close()
            self._metrics.check_workers.inc()
            try:
                self._send(index, (CHECKS, self._sets[index]))
                why = await self._read(proc)
            finally:
                self._metrics.check_workers.dec()
            if why is not None:  # it wrote garbage: it cannot be trusted with another frame
                proc.kill()
            code = await proc.wait()
            if self._stopping:
                return
            if time.monotonic() - began >= STEADY:
                delay = FIRST_BACKOFF
            self._metrics.check_worker_restarts.labels(str(index)).inc()
            log.error(
                "check worker failed: its checks deliver nothing until it is back",
                worker=index,
                pid=proc.pid,
                exit_code=code,
                reason=why or "exited",
                checks=len(self._sets[index]),
                restart_in=delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def _read(self, proc: asyncio.subprocess.Process) -> str | None:
        """Deliver its results until its stdout ends (None) or holds garbage (why)."""
        stdout = proc.stdout
        assert stdout is not None
        deliver, skipped, statuses = self._deliver, self._skipped, _STATUSES
        while True:
            try:
                (size,) = HEADER.unpack(await stdout.readexactly(HEADER.size))
                if size > MAX_FRAME:
                    return f"bad frame: {size} bytes"
                results, skips = decode_results(await stdout.readexactly(size))
            except asyncio.IncompleteReadError as exc:
                return "bad frame: cut short" if exc.partial else None
            except BadFrame as exc:
                return f"bad frame: {exc}"
            for name, status, values, ended, duration, reason, due in results:
                await deliver(name, statuses[status], values, ended, duration, reason or "", due)
            for name in skips:
                skipped(name)


def _log_fd() -> int | None:
    """Where the worker's stderr goes: where this daemon logs (its stdout), else our stderr."""
    try:
        return sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. a test's captured stdout
        return None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _ROOT if not path else f"{_ROOT}{os.pathsep}{path}"
    return env
