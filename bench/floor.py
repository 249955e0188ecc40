"""The Python floors, in their own process: a bare aiohttp GET loop with one shared session
(`--client aiohttp`), and a raw asyncio protocol on kept-alive connections (`--client raw`,
bench/floor_raw.py): what an HTTP client library costs over the least a GET can cost.

`paced`: N distinct URLs, each fetched once per second on a fixed phase (like N checks at a
1 s interval), dispatched on 10 ms ticks with a task per request, at most `--connections`
in flight (runbookd's bound: max_checks_in_flight + 16); a request due while that many are
in flight is skipped and counted. What a minimal asyncio poller costs at runbookd's rate.
`saturated`: C workers fetching as fast as they can (the figure BENCH-ANCHORS.md quotes).
Counters are read over stdin/stdout.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from yarl import URL

from bench.floor_raw import RawPool, request_bytes
from bench.worker import serve_commands
from daemon.runtime import eventloop

TICK = 0.01


Fetch = Callable[[int], Awaitable[int]]  # target index -> status


def aiohttp_fetch(session: aiohttp.ClientSession, urls: list[str]) -> Fetch:
    async def fetch(index: int) -> int:
        async with session.get(urls[index]) as resp:
            await resp.read()
            return resp.status

    return fetch


def raw_fetch(pool: RawPool, urls: list[str]) -> Fetch:
    requests = [request_bytes(pool.host, pool.port, URL(url).raw_path_qs) for url in urls]

    async def fetch(index: int) -> int:
        return await pool.get(requests[index])

    return fetch


class Floor:
    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self.done = 0
        self.errors = 0
        self.skipped = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def get(self, index: int) -> None:
        try:
            if await self.fetch(index) != 200:
                self.errors += 1
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.errors += 1
        self.done += 1

    async def paced(self, count: int, period: float, limit: int) -> None:
        loop = asyncio.get_running_loop()
        step = period / count
        start = loop.time()
        sent = 0
        while True:
            due = int((loop.time() - start) / step) + 1
            while sent < due:
                sent += 1
                if len(self.tasks) >= limit:
                    self.skipped += 1
                    continue
                task = asyncio.create_task(self.get((sent - 1) % count))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            await asyncio.sleep(TICK)

    async def saturated(self) -> None:
        while True:
            await self.get(0)


async def main(args: argparse.Namespace) -> None:
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=5)
    url = URL(args.url)
    assert url.host is not None
    assert url.port is not None
    pool = RawPool(url.host, url.port)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        paced = args.mode == "paced"
        urls = [f"{args.url}?c={i}" for i in range(args.names)] if paced else [args.url]
        fetch = raw_fetch(pool, urls) if args.client == "raw" else aiohttp_fetch(session, urls)
        floor = Floor(fetch)
        if paced:
            loops = [asyncio.create_task(floor.paced(len(urls), args.period, args.connections))]
        else:
            loops = [asyncio.create_task(floor.saturated()) for _ in range(args.concurrency)]

        async def handle(command: dict[str, Any]) -> dict[str, Any]:
            return {"done": floor.done, "errors": floor.errors, "skipped": floor.skipped}

        try:
            await serve_commands(handle)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("paced", "saturated"), default="paced")
    parser.add_argument("--client", choices=("aiohttp", "raw"), default="aiohttp")
    parser.add_argument("--names", type=int, default=1000, help="paced: distinct URLs")
    parser.add_argument("--period", type=float, default=1.0, help="paced: seconds per round")
    parser.add_argument("--concurrency", type=int, default=10, help="saturated: workers")
    parser.add_argument("--connections", type=int, default=272, help="connection pool size")
    eventloop.run(main(parser.parse_args()))
