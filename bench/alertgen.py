"""The alert load generator, in its own process: Alertmanager-shaped alerts, posted with aiohttp.

Two formats of the same alerts: `runbookd` (an Alertmanager v4 webhook body, to
POST /api/v1/alerts) and `alertmanager` (a JSON array, to Alertmanager's POST /api/v2/alerts).
Alert k is named BenchAlert{k % 10} with the label instance=host-k, so alert k always has the
same fingerprint: posting a range again is the deduplication pass. Bodies are serialised
before the clock starts. Closed loop (`rate` null): `concurrency` requests in flight, as fast
as the server answers. Open loop (`rate` in requests/s): requests start on a fixed schedule and
latency counts from the scheduled start, so a stall is not hidden (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from bench.measure import percentile
from bench.worker import serve_commands
from daemon.runtime import eventloop

NAMES = 10  # BenchAlert0 .. BenchAlert9
STARTS_AT = "2026-01-01T00:00:00Z"


def alert_labels(k: int) -> dict[str, str]:
    return {
        "alertname": f"BenchAlert{k % NAMES}",
        "instance": f"host-{k}",
        "job": "bench",
        "severity": "warning",
    }


def _summary(k: int) -> dict[str, str]:
    return {"summary": f"bench alert {k}", "description": "synthetic alert for the benchmark"}


def webhook_body(keys: range) -> bytes:
    """Alertmanager's webhook (version 4), as runbookd's intake receives it."""
    alerts = [
        {
            "status": "firing",
            "labels": alert_labels(k),
            "annotations": _summary(k),
            "startsAt": STARTS_AT,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": f"http://127.0.0.1/graph?k={k}",
            "fingerprint": f"{k:016x}",
        }
        for k in keys
    ]
    body = {
        "version": "4",
        "groupKey": '{}:{job="bench"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "runbookd",
        "groupLabels": {"job": "bench"},
        "commonLabels": {"job": "bench"},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    }
    return json.dumps(body).encode()


def v2_body(keys: range) -> bytes:
    """Alertmanager's own API: POST /api/v2/alerts takes a JSON array of alerts."""
    alerts = [
        {
            "labels": alert_labels(k),
            "annotations": _summary(k),
            "startsAt": STARTS_AT,
            "generatorURL": f"http://127.0.0.1/graph?k={k}",
        }
        for k in keys
    ]
    return json.dumps(alerts).encode()


class Run:
    def __init__(self, command: dict[str, Any]) -> None:
        self.url: str = command["url"]
        self.batch: int = command["batch"]
        self.concurrency: int = command["concurrency"]
        self.rate: float | None = command.get("rate")
        self.max_seconds: float = command["max_seconds"]
        start, count = int(command["start"]), int(command["count"])
        encode = webhook_body if command["format"] == "runbookd" else v2_body
        self.bodies = [
            (
                encode(range(k, min(k + self.batch, start + count))),
                min(self.batch, start + count - k),
            )
            for k in range(start, start + count, self.batch)
        ]
        self.latencies: list[float] = []
        self.alerts_ok = 0
        self.alerts_sent = 0
        self.requests_ok = 0
        self.errors = 0
        self.matched = 0
        self.error_sample = ""

    async def post(self, session: aiohttp.ClientSession, body: bytes, n: int, t0: float) -> None:
        self.alerts_sent += n
        try:
            async with session.post(
                self.url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                text = await resp.read()
                ok = resp.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            ok, text = False, repr(exc).encode()
        self.latencies.append(time.perf_counter() - t0)
        if not ok:
            self.errors += 1
            self.error_sample = self.error_sample or text[:200].decode(errors="replace")
            return
        self.requests_ok += 1
        self.alerts_ok += n
        if text:
            self.matched += int(json.loads(text).get("matched", 0))

    async def closed_loop(self, session: aiohttp.ClientSession, deadline: float) -> None:
        queue = iter(self.bodies)

        async def worker() -> None:
            for body, n in queue:
                if time.perf_counter() > deadline:
                    return
                await self.post(session, body, n, time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def open_loop(self, session: aiohttp.ClientSession, deadline: float) -> None:
        assert self.rate is not None
        gate = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()

        async def send(body: bytes, n: int, scheduled: float) -> None:
            async with gate:
                await self.post(session, body, n, scheduled)

        for i, (body, n) in enumerate(self.bodies):
            scheduled = start + i / self.rate
            if scheduled > deadline:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(send(body, n, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    async def run(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        start = time.perf_counter()
        deadline = start + self.max_seconds
        if self.rate is None:
            await self.closed_loop(session, deadline)
        else:
            await self.open_loop(session, deadline)
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "requests": len(self.latencies),
            "requests_ok": self.requests_ok,
            "alerts_ok": self.alerts_ok,
            "alerts_sent": self.alerts_sent,
            "errors": self.errors,
            "error_sample": self.error_sample,
            "matched": self.matched,
            "alerts_per_s": self.alerts_ok / seconds if seconds > 0 else 0.0,
            "requests_per_s": self.requests_ok / seconds if seconds > 0 else 0.0,
            "p50_s": percentile(self.latencies, 0.50),
            "p99_s": percentile(self.latencies, 0.99),
        }


async def main() -> None:
    connector = aiohttp.TCPConnector(limit=100)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        prepared: list[Run] = []

        async def handle(command: dict[str, Any]) -> dict[str, Any]:
            # "prepare" builds the bodies outside the measured window; "go" sends them.
            if command["op"] == "prepare":
                prepared[:] = [Run(command)]
                return {"requests": len(prepared[0].bodies)}
            return await prepared.pop().run(session)

        await serve_commands(handle)


if __name__ == "__main__":
    eventloop.run(main())
