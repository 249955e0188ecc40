"""`runbookd once`: run the checks one time and print what they see, as a table.

A check whose first run lacks something for want of an earlier sample (a `scrape` check's
rates need two scrapes, a `system` check's CPU use two readings) runs a second time after a
short pause: its interval, at most AGAIN_AFTER_MAX.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from checks.base import Check, CheckConfig, CheckContext, CheckResult
from daemon.clients.lean_http import LeanHttpClient
from daemon.config.document import RunbookConfig
from daemon.core.clock import Clock, SystemClock
from daemon.core.models import Status
from daemon.runtime.daemon import build_checks
from daemon.runtime.scheduler import run_check

REASON_WIDTH = 60
AGAIN_AFTER_MAX = 5.0


class OnceExit(enum.IntEnum):
    """The exit codes of `runbookd once` (2, a config or usage error, is the command's)."""

    OK = 0  # every check OK
    BAD = 1  # a check is WARN or CRITICAL
    UNKNOWN = 3  # none is bad, but a check could not measure


def exit_code(statuses: Sequence[Status]) -> OnceExit:
    """Bad outranks unknown: a check that could not measure never hides one that failed."""
    if any(s in (Status.WARN, Status.CRITICAL) for s in statuses):
        return OnceExit.BAD
    if any(s is Status.UNKNOWN for s in statuses):
        return OnceExit.UNKNOWN
    return OnceExit.OK


async def run_once(
    config: RunbookConfig,
    names: Sequence[str] = (),
    out: Callable[[str], None] = print,
    clock: Clock | None = None,
) -> OnceExit:
    """Run the selected checks (`names` must name defined ones; none: all) and print a table."""
    checks = build_checks(config)
    if names:
        checks = {n: checks[n] for n in names}
    clock = clock or SystemClock()
    lean_http = LeanHttpClient()
    async with aiohttp.ClientSession() as session:
        ctx = CheckContext(session, clock, lean_http)
        await asyncio.gather(*(check.start(ctx) for check, _ in checks.values()))
        try:
            results = dict(zip(checks, await _run_all(checks, ctx, clock), strict=True))
            again = {n: checks[n] for n, (result, _) in results.items() if result.needs_previous}
            if again:
                await clock.sleep(
                    min(AGAIN_AFTER_MAX, *(cfg.interval for _, cfg in again.values()))
                )
                results.update(zip(again, await _run_all(again, ctx, clock), strict=True))
        finally:
            await asyncio.gather(*(check.stop() for check, _ in checks.values()))
            await lean_http.close()
    rows = [
        (name, result.status.name, f"{took * 1000:.0f}ms", _values(result), result.reason)
        for name, (result, took) in results.items()
    ]
    for line in _table(("CHECK", "STATUS", "TOOK", "VALUES", "REASON"), rows):
        out(line)
    return exit_code([result.status for result, _ in results.values()])


async def _run_all(
    checks: dict[str, tuple[Check, CheckConfig]], ctx: CheckContext, clock: Clock
) -> list[tuple[CheckResult, float]]:
    return await asyncio.gather(
        *(_timed(run_check(check, cfg, ctx, clock)) for check, cfg in checks.values())
    )


async def _timed(run: Awaitable[CheckResult]) -> tuple[CheckResult, float]:
    started = time.perf_counter()
    result = await run
    return result, time.perf_counter() - started


def _values(result: CheckResult) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(result.values.items())) or "-"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    rows = [(*row[:-1], _clip(row[-1])) for row in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]


def _clip(text: str) -> str:
    text = text or "-"
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 1] + "…"
