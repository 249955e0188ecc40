"""`runbookd once`: run the checks one time and print what they see, as a table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from checks.base import CheckContext, CheckResult
from daemon.config.document import RunbookConfig
from daemon.core.clock import SystemClock
from daemon.core.models import Status
from daemon.runtime.daemon import build_checks
from daemon.runtime.scheduler import run_check

REASON_WIDTH = 60


async def run_once(
    config: RunbookConfig, names: Sequence[str] = (), out: Callable[[str], None] = print
) -> int:
    """0 when every selected check is OK, 1 otherwise. `names` must name defined checks."""
    checks = build_checks(config)
    if names:
        checks = {n: checks[n] for n in names}
    clock = SystemClock()
    async with aiohttp.ClientSession() as session:
        ctx = CheckContext(session, clock)
        await asyncio.gather(*(check.start(ctx) for check, _ in checks.values()))
        try:
            results = await asyncio.gather(
                *(_timed(run_check(check, cfg, ctx, clock)) for check, cfg in checks.values())
            )
        finally:
            await asyncio.gather(*(check.stop() for check, _ in checks.values()))
    rows = [
        (name, result.status.name, f"{took * 1000:.0f}ms", _values(result), result.reason)
        for name, (result, took) in zip(checks, results, strict=True)
    ]
    for line in _table(("CHECK", "STATUS", "TOOK", "VALUES", "REASON"), rows):
        out(line)
    return 0 if all(result.status is Status.OK for result, _ in results) else 1


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
