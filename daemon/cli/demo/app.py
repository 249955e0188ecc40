"""The demo's world: a small web application with deploys, a pager that receives pages, and
a Slack channel that receives deploy announcements.

The application serves /health, /api/version, /api/tasks and a Prometheus /metrics (also as
/api/health and /api/metrics, where a Next.js app has them, so that the example configs run
against it), and an admin endpoint that "deploys" a version. A version whose name ends in
"-bad" fails every fifth /api/tasks request (an error rate of exactly 20%). The pager speaks
the PagerDuty Events API v2 enqueue format.

`runbookd demo deploy` gives the application a latency to measure: each request works for
`work` seconds, a bad version makes every `slow_every`-th request `slow` seconds slower, and
every `errors_every`-th request of any version fails (a background error rate for the
pre-deploy baseline). By default none of these: requests answer at once.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

FAIL_EVERY = 5  # a bad version fails every fifth request
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class DemoApp:
    def __init__(
        self,
        *,
        work: float = 0.0,
        errors_every: int | None = None,
        slow_every: int | None = None,
        slow: float = 0.0,
        buckets: tuple[float, ...] = BUCKETS,
    ) -> None:
        self.work = work
        self.errors_every = errors_every
        self.slow_every = slow_every
        self.slow = slow
        self.versions = ["v1"]
        self.served = 0
        self.rollbacks: list[dict[str, Any]] = []
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests", "Requests served.", ["status"], registry=self.registry
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Request latency.",
            registry=self.registry,
            buckets=buckets,
        )
        self.app = web.Application()
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/api/version", self.version)
        self.app.router.add_get("/api/tasks", self.tasks)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/api/health", self.health)
        self.app.router.add_get("/api/metrics", self.metrics)
        self.app.router.add_post("/admin/deploy", self.deploy)
        self.app.router.add_post("/admin/rollback", self.rollback)

    @property
    def current(self) -> str:
        return self.versions[-1]

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": self.current})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.current})

    async def tasks(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        self.served += 1
        n, bad = self.served, self.current.endswith("-bad")
        delay = self.work
        if bad and self.slow_every and n % self.slow_every == 0:
            delay += self.slow
        if delay:
            await asyncio.sleep(delay)
        failed = (bad and n % FAIL_EVERY == 0) or bool(
            self.errors_every and n % self.errors_every == 0
        )
        status = 500 if failed else 200
        self.requests.labels(str(status)).inc()
        self.latency.observe(time.perf_counter() - started)
        if failed:
            return web.json_response({"error": "task store unavailable"}, status=500)
        return web.json_response({"tasks": [{"id": 1, "title": "write the runbook"}]})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def deploy(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.versions.append(str(body["version"]))
        return web.json_response({"version": self.current})

    async def rollback(self, request: web.Request) -> web.Response:
        if len(self.versions) < 2:
            return web.json_response({"error": "no previous version"}, status=409)
        self.rollbacks.append(await request.json())
        gone = self.versions.pop()
        return web.json_response({"rolled_back": gone, "version": self.current})


class Pager:
    """Accepts PagerDuty Events API v2 events at /v2/enqueue and keeps them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/v2/enqueue", self.enqueue)

    async def enqueue(self, request: web.Request) -> web.Response:
        event = await request.json()
        self.events.append(event)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]},
            status=202,
        )

    def actions(self) -> list[str]:
        return [e["event_action"] for e in self.events]


class Channel:
    """A Slack incoming webhook at /services/T000/B000/XXXX: the deployments channel. Each
    message, as Slack would show it (its text, then its fields as "Label: value"), goes to
    `show` as it arrives; the texts are kept."""

    PATH = "/services/T000/B000/XXXX"

    def __init__(self, show: Callable[[str, list[str]], None] = lambda text, facts: None) -> None:
        self.show = show
        self.texts: list[str] = []
        self.app = web.Application()
        self.app.router.add_post(self.PATH, self.post)

    async def post(self, request: web.Request) -> web.Response:
        message = await request.json()
        # Slack's mrkdwn escapes &, < and >; the channel shows them plain.
        text = html.unescape(str(message.get("text", "")))
        facts = []
        for block in message.get("blocks", []):
            for field in block.get("fields", []):
                label, _, value = str(field.get("text", "")).partition("\n")
                facts.append(f"{label.strip('*')}: {html.unescape(value)}")
        self.texts.append(text)
        self.show(text, facts)
        return web.Response(text="ok")

    def saw(self, start: str) -> bool:
        return any(text.startswith(start) for text in self.texts)
