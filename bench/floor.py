"""The Python floor: a bare aiohttp GET loop with one shared session, in its own process.

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
from typing import Any

import aiohttp

from bench.worker import serve_commands
from daemon.runtime import eventloop

TICK = 0.01


class Floor:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.done = 0
        self.errors = 0
        self.skipped = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def get(self, url: str) -> None:
        try:
            async with self.session.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    self.errors += 1
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.errors += 1
        self.done += 1

    async def paced(self, urls: list[str], period: float, limit: int) -> None:
        loop = asyncio.get_running_loop()
        step = period / len(urls)
        start = loop.time()
        sent = 0
        while True:
            due = int((loop.time() - start) / step) + 1
            while sent < due:
                sent += 1
                if len(self.tasks) >= limit:
                    self.skipped += 1
                    continue
                task = asyncio.create_task(self.get(urls[(sent - 1) % len(urls)]))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            await asyncio.sleep(TICK)

    async def saturated(self, url: str) -> None:
        while True:
            await self.get(url)


async def main(args: argparse.Namespace) -> None:
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        floor = Floor(session)
        if args.mode == "paced":
            urls = [f"{args.url}?c={i}" for i in range(args.names)]
            loops = [asyncio.create_task(floor.paced(urls, args.period, args.connections))]
        else:
            loops = [
                asyncio.create_task(floor.saturated(args.url)) for _ in range(args.concurrency)
            ]

        async def handle(command: dict[str, Any]) -> dict[str, Any]:
            return {"done": floor.done, "errors": floor.errors, "skipped": floor.skipped}

        try:
            await serve_commands(handle)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("paced", "saturated"), default="paced")
    parser.add_argument("--names", type=int, default=1000, help="paced: distinct URLs")
    parser.add_argument("--period", type=float, default=1.0, help="paced: seconds per round")
    parser.add_argument("--concurrency", type=int, default=10, help="saturated: workers")
    parser.add_argument("--connections", type=int, default=272, help="connection pool size")
    eventloop.run(main(parser.parse_args()))
