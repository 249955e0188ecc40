"""A check-worker process: `python -m daemon.runtime.check_worker LOG_LEVEL MAX_IN_FLIGHT`.

Started by the daemon (check_workers.py) to run part of its plain `http` checks on another
core. It runs the daemon's own Scheduler (the same timer heap, workers, skip rule and phases)
with a relay in place of the bookkeeping and the sink: each run's result is buffered and the
buffer written to stdout as one frame per tick (check_frames.py). The daemon does
the rest (metrics, lateness, status logs, the engine). Commands come on stdin; when stdin
closes (the daemon is gone), the worker stops. Logs go to stderr, which the daemon points
where its own logs go.
"""

# ruff: noqa: I001 -- logs first: it keeps structlog from importing rich (see there)
from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

from daemon.runtime.logs import configure  # before any other module imports structlog

import aiohttp
import structlog
from prometheus_client import CollectorRegistry

from checks.base import CHECKS, CheckConfig, CheckContext, CheckResult
from daemon.clients.lean_http import LeanHttpClient
from daemon.core.clock import SystemClock
from daemon.runtime import eventloop
from daemon.runtime.check_frames import CHECKS as SET_CHECKS
from daemon.runtime.check_frames import (
    HEADER,
    MAX_FRAME,
    RUN_NOW,
    STOP,
    BadFrame,
    Result,
    decode_command,
    encode_results,
)
from daemon.runtime.metrics import Metrics
from daemon.runtime.scheduler import TICK, Job, Scheduler

log = structlog.get_logger("runbookd.check_worker")


class Outbox:
    """Results and skips since the last write, written once per scheduler tick: a frame of
    ~100 results at 10,000 a second, not one per event-loop pass (the daemon wakes up and
    decodes once per frame)."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write  # a pipe transport's: buffered, never blocks the loop
        self._results: list[Result] = []
        self._skipped: list[str] = []
        self._due = False

    def result(
        self, job: Job, result: CheckResult, started: float, ended: float, due: float
    ) -> None:
        self._results.append(
            (
                job.name,
                int(result.status),
                _floats(result.values),
                ended,
                ended - started,
                result.reason or None,
                due,
            )
        )
        self._soon()

    def skip(self, job: Job) -> None:
        self._skipped.append(job.name)
        self._soon()

    def _soon(self) -> None:
        if not self._due:
            self._due = True
            asyncio.get_running_loop().call_later(TICK, self.flush)

    def flush(self) -> None:
        self._due = False
        if not self._results and not self._skipped:
            return
        frame = encode_results(self._results, self._skipped)
        self._results, self._skipped = [], []
        self._write(frame)


def _floats(values: dict[str, float]) -> dict[str, float]:
    """Values as floats, as a frame must carry them (a check's int is its bug, not fatal)."""
    if all(type(v) is float for v in values.values()):
        return values
    out: dict[str, float] = {}
    for name, v in values.items():
        try:
            out[name] = float(v)
        except (TypeError, ValueError):
            continue
    return out


async def _commands(reader: asyncio.StreamReader, scheduler: Scheduler) -> None:
    """Until stdin closes or says stop."""
    while True:
        try:
            header = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError:
            return  # the daemon closed our stdin (stop) or is gone
        (size,) = HEADER.unpack(header)
        if size > MAX_FRAME:
            raise BadFrame(f"a command of {size} bytes")
        command = decode_command(await reader.readexactly(size))
        kind = command[0]
        if kind == SET_CHECKS:
            configs: dict[str, CheckConfig] = command[1]
            await scheduler.set_checks(
                {name: (CHECKS.get(cfg.type)(name, cfg), cfg) for name, cfg in configs.items()}
            )
        elif kind == RUN_NOW:
            scheduler.run_now(command[1])
        elif kind == STOP:
            return
        else:
            raise BadFrame(f"unknown command {kind!r}")


async def main(max_in_flight: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_FRAME)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(sys.stdin.fileno(), "rb", 0)
    )
    transport, _ = await loop.connect_write_pipe(
        asyncio.Protocol, os.fdopen(sys.stdout.fileno(), "wb", 0)
    )
    outbox = Outbox(transport.write)
    clock = SystemClock()
    connector = aiohttp.TCPConnector(limit=max_in_flight + 16)
    async with aiohttp.ClientSession(connector=connector) as session:
        lean = LeanHttpClient(max_idle_per_host=max_in_flight + 16)
        scheduler = Scheduler(
            ctx=CheckContext(session, clock, lean),
            clock=clock,
            sink=_no_sink,
            metrics=Metrics(CollectorRegistry()),
            max_in_flight=max_in_flight,
            relay=outbox.result,
            on_skip=outbox.skip,
        )
        scheduler.start()
        try:
            await _commands(reader, scheduler)
        finally:
            await scheduler.stop()
            await lean.close()
            outbox.flush()
            transport.close()


async def _no_sink(_: object) -> None:  # the relay takes every result
    raise AssertionError("a check worker's scheduler has no sink")


if __name__ == "__main__":
    level, in_flight = sys.argv[1], int(sys.argv[2])
    configure(level, stream=sys.stderr)
    try:
        eventloop.run(main(in_flight))
    except BadFrame as exc:
        log.error("check worker: bad command from the daemon", error=str(exc))
        sys.exit(2)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
