"""`runbookd demo`: a bad deploy, detected, rolled back, paged, verified and resolved.

Everything binds 127.0.0.1. The demo prints the incident timeline as it happens and exits 0
once every step was seen, or 1 naming the step that did not happen. Run from a terminal, it
then stays up (the application, its traffic, the daemon and its console) until Ctrl-C, so the
console's URL it printed can be browsed after the story ends, not only during its 20 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from daemon.api.servers import serve
from daemon.cli.demo.app import DemoApp, Pager
from daemon.config.loader import load_config
from daemon.core.models import Incident, Step, TimelineEntry
from daemon.runtime.daemon import Daemon


def bundled_config(name: str) -> Path:
    """config/NAME of a source checkout, else the copy a wheel installs under
    <prefix>/share/runbookd."""
    checkout = Path(__file__).resolve().parents[3] / "config" / name
    installed = Path(sys.prefix) / "share" / "runbookd" / name
    return checkout if checkout.exists() else installed


DEFAULT_CONFIG = bundled_config("demo.yaml")
TRAFFIC_PER_SECOND = 50
STEP_TIMEOUT = 25.0


async def traffic(session: aiohttp.ClientSession, url: str) -> None:
    """Steady user traffic, so the application's error rate means something."""
    while True:
        async with session.get(url) as response:
            await response.read()
        await asyncio.sleep(1 / TRAFFIC_PER_SECOND)


class Stage:
    def __init__(self, out: Callable[[str], None], step_timeout: float = STEP_TIMEOUT) -> None:
        self.out = out
        self.step_timeout = step_timeout  # how long each step may take to happen
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.t0:5.1f}s] {text}")

    async def until(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.step_timeout
        while not done():
            if time.monotonic() > deadline:
                raise DemoFailed(what)
            await asyncio.sleep(0.1)
        self.say(f"✓ {what}")


def show_timelines(stage: Stage, daemon: Daemon) -> list[Incident]:
    """Print every timeline entry as it is recorded; the incidents opened, as they open."""
    opened: list[Incident] = []

    def show(incident: Incident, entry: TimelineEntry) -> None:
        if entry.kind == Step.OPENED:
            opened.append(incident)
        stage.say(f"  timeline {incident.id} {entry.kind:>9}: {entry.message}")

    daemon.recorder.listeners.append(show)
    return opened


def say_now(text: str) -> None:
    """A line of the story, out at once even through a pipe (`| tee`): someone is watching."""
    print(text, flush=True)


class DemoFailed(Exception):
    pass


async def until_interrupted(console: str) -> None:
    """Until Ctrl-C (SIGINT) or SIGTERM: the demo's end when it stays up for browsing."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def run_demo(
    config_path: Path = DEFAULT_CONFIG,
    out: Callable[[str], None] = say_now,
    stay: Callable[[str], Awaitable[None]] | None = None,
) -> int:
    """The story, then, if it completed and `stay` is given, everything kept up until `stay`
    (given the console's URL) returns."""
    stage = Stage(out)
    app, pager = DemoApp(), Pager()
    with tempfile.TemporaryDirectory(prefix="runbookd-demo-") as state_dir:
        async with serve(app.app) as app_url, serve(pager.app) as pager_url:
            os.environ.update(
                DEMO_APP_URL=app_url, DEMO_PAGER_URL=pager_url, RUNBOOKD_STATE_DIR=state_dir
            )
            daemon = Daemon(load_config(config_path), config_path=config_path)
            opened = show_timelines(stage, daemon)
            async with aiohttp.ClientSession() as session:
                load = asyncio.create_task(traffic(session, f"{app_url}/api/tasks"))
                await daemon.start()
                try:
                    await _scenario(stage, daemon, app, app_url, pager, opened, session)
                    if stay is not None:
                        console = f"http://127.0.0.1:{daemon.port}/ui/"
                        stage.say(f"the console stays up at {console} (Ctrl-C ends the demo)")
                        await stay(console)
                    return 0
                except DemoFailed as failed:
                    stage.say(f"✗ demo failed: this step did not happen: {failed}")
                    return 1
                finally:
                    load.cancel()
                    await daemon.stop()


async def _scenario(
    stage: Stage,
    daemon: Daemon,
    app: DemoApp,
    app_url: str,
    pager: Pager,
    opened: list[Incident],
    session: aiohttp.ClientSession,
) -> None:
    stage.say(f"application v1 serving {TRAFFIC_PER_SECOND} req/s; runbookd on port {daemon.port}")
    stage.say(f"console: http://127.0.0.1:{daemon.port}/ui/ (browsable while the demo runs)")
    await stage.until(
        "runbookd ready: every check ran once", lambda: daemon.scheduler.first_round.is_set()
    )
    await stage.until("healthy traffic measured", lambda: app.served >= 3 * TRAFFIC_PER_SECOND)
    stage.say("deploying v2-bad (every fifth request fails: 20% errors)")
    async with session.post(f"{app_url}/admin/deploy", json={"version": "v2-bad"}) as response:
        response.raise_for_status()
    await stage.until("incident opened: error rate above 5% for 3s", lambda: bool(opened))
    await stage.until("rolled back to v1", lambda: app.current == "v1" and bool(app.rollbacks))
    await stage.until("on-call paged", lambda: "trigger" in pager.actions())
    incident = opened[0]
    await stage.until("incident resolved: error rate back under 5%", lambda: not incident.is_open)
    await stage.until("page resolved", lambda: "resolve" in pager.actions())
    await stage.until(
        "recovery verified", lambda: any(e.kind == Step.VERIFIED for e in incident.timeline)
    )
    url = f"http://127.0.0.1:{daemon.port}/api/v1/incidents/{incident.id}"
    async with session.get(url) as response:
        stored = await response.json()
    stage.say(
        f"GET /api/v1/incidents/{incident.id}: {stored['status']}, "
        f"{len(stored['timeline'])} timeline entries"
    )
    if stored["status"] != "resolved":
        raise DemoFailed("incident stored as resolved")
    stage.say("demo complete: detected, rolled back, paged, verified, resolved")
