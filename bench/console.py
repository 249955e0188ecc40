"""Scenario 5, the console: server time of the overview and of an incident page, with 1,000
checks polling at 1 s and 10,000 stored incidents (a few of them open); what the console adds
to the daemon's RSS; the size of the script it ships.

Each page is fetched sequentially on one kept-alive connection with a session cookie, so a
figure is one request's whole round trip on 127.0.0.1 (the handler, the rendering, the bytes):
an upper bound of the server's time. RSS is read after a second of quiet before the first
console request and again after the last one: the console's modules load on first use, so the
difference is everything it adds (Jinja2, the templates, the sessions, any cache)."""

from __future__ import annotations

import http.client
import time
from importlib import resources
from typing import Any

from bench import measure as m
from bench.footprint import _settled_rss, populated
from bench.harness import Run, log
from bench.peers import http_checks, runbookd_config, start_runbookd
from bench.procs import BenchError, free_port, http_get

OPEN = 5  # open incidents, on checks that fail: the overview lists them first
WARMUP = 10


def _rules() -> dict[str, Any]:
    """One rule per failing check, and 15 more on healthy ones: the overview lists each."""
    rules: dict[str, Any] = {}
    for i in range(OPEN):
        rules[f"down_{i}"] = {"when": f"broken_{i}.up < 1", "severity": "critical"}
    for i in range(15):
        rules[f"slow_{i}"] = {"when": f"web_{i:05d}.latency_seconds > 1"}
    return rules


class Browser:
    """One kept-alive connection, with the session cookie of a login."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.cookie = ""

    def login(self) -> None:
        # No tokens configured: the console opens (loopback only), as the API does.
        self.conn.request(
            "POST",
            "/ui/login",
            body="",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = self.conn.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie") or ""
        if response.status != 303 or not cookie:
            raise BenchError(f"login: HTTP {response.status}, cookie {cookie!r}")
        self.cookie = cookie.split(";", 1)[0]

    def get(self, path: str) -> tuple[float, int]:
        """(milliseconds, bytes) of one GET that must answer 200."""
        started = time.perf_counter()
        self.conn.request("GET", path, headers={"Cookie": self.cookie})
        response = self.conn.getresponse()
        body = response.read()
        elapsed = 1000 * (time.perf_counter() - started)
        if response.status != 200:
            raise BenchError(f"GET {path}: HTTP {response.status}: {body[:200]!r}")
        return elapsed, len(body)


def _timed(browser: Browser, path: str, count: int) -> dict[str, Any]:
    for _ in range(WARMUP):
        browser.get(path)
    timings, size = [], 0
    for _ in range(count):
        elapsed, size = browser.get(path)
        timings.append(elapsed)
    return {
        "requests": count,
        "p50_ms": m.percentile(timings, 0.50),
        "p95_ms": m.percentile(timings, 0.95),
        "max_ms": max(timings),
        "bytes": size,
    }


def _wait_open(url: str, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = http_get(f"{url}/api/v1/incidents?status=open&limit=100")
        if code == 200 and body.count(b'"opened_at"') >= want:
            return
        time.sleep(0.1)
    raise BenchError(f"fewer than {want} open incidents after {timeout:g}s")


def scenario(run: Run) -> dict[str, Any]:
    nginx = run.nginx
    assert nginx is not None
    n_checks, n_incidents = 1000, run.params.incidents
    log(f"console: {n_checks} checks, {n_incidents} stored incidents")
    state = populated(run, "state-console", n_incidents)
    checks = http_checks(f"{nginx.url}/health", n_checks - OPEN)
    for i in range(OPEN):
        checks[f"broken_{i}"] = {"type": "http", "url": f"{nginx.url}/missing", "interval": "1s"}
    port = free_port()
    config = runbookd_config(state, port, checks=checks, rules=_rules())
    server = start_runbookd(run.procs, run.tmp, "runbookd-console", config)
    try:
        _wait_open(server.url, OPEN, 30)
        rss_before, _ = _settled_rss(server)
        browser = Browser(port)
        browser.login()
        count = 200 if run.params.mode == "full" else 100
        overview = _timed(browser, "/ui/", count)
        incident = _timed(browser, "/ui/incidents/inc-bench-009999", count)
        live = _timed(browser, "/ui/live.json", count)
        rss_after, _ = _settled_rss(server)
    finally:
        run.procs.stop(server.proc)
    static = resources.files("daemon.ui").joinpath("static")
    script = sum(len(f.read_bytes()) for f in static.iterdir() if f.name.endswith(".js"))
    out = {
        "checks": n_checks,
        "incidents": n_incidents,
        "open": OPEN,
        "overview": overview,
        "incident": incident,
        "overview_live": live,
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "script_bytes": script,
    }
    report(run, out)
    return out


def report(run: Run, out: dict[str, Any]) -> None:
    s = "5 console"
    where = f"{out['checks']} checks, {out['incidents']} incidents"
    for key, label in (("overview", "overview"), ("incident", "an incident page")):
        page = out[key]
        run.row(
            s,
            f"{label}, server time p95 ({where})",
            page["p95_ms"],
            "ms",
            target=("<=", 50.0, "<= 50 ms"),
            note=f"p50 {page['p50_ms']:.1f} ms, {page['bytes'] / 1000:.0f} KB",
        )
    live = out["overview_live"]
    run.row(s, "overview's live part, p95", live["p95_ms"], "ms", note="polled every 2 s")
    added = out["rss_after_mb"] - out["rss_before_mb"]
    run.row(
        s,
        "RSS the console adds (after its pages, over before)",
        added,
        "MB",
        target=("<=", 5.0, "<= 5 MB"),
        note=f"{out['rss_before_mb']:.1f} -> {out['rss_after_mb']:.1f} MB",
    )
    run.row(
        s,
        "script shipped",
        out["script_bytes"] / 1000,
        "KB",
        target=("<=", 50.0, "<= 50 KB"),
    )
