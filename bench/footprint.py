"""Scenario 4, footprint: idle RSS, RSS with N checks (from scenario 1, beside Prometheus at N
targets), RSS over a store of 10,000 incidents, and cold start to ready with 1,000 checks."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from bench import measure as m
from bench.harness import Run, log
from bench.peers import (
    REPO,
    Server,
    http_checks,
    runbookd_config,
    spawn_runbookd,
    start_runbookd,
    write_runbookd_config,
)
from bench.procs import BenchError, free_port, http_get, wait_http


def _settled_rss(server: Server, samples: int = 3) -> tuple[float, float]:
    """(median RSS in MB, CPU % over the sampling) after a second of quiet."""
    time.sleep(1.0)
    cpu0, t0 = m.cpu_seconds(server.pid), time.monotonic()
    rss = []
    for _ in range(samples):
        time.sleep(0.3)
        rss.append(m.rss_bytes(server.pid) / 1e6)
    cpu = m.cpu_seconds(server.pid) - cpu0
    return m.median(rss), 100 * cpu / (time.monotonic() - t0)


def idle(run: Run) -> dict[str, Any]:
    log("footprint: idle runbookd (no checks)")
    port = free_port()
    config = runbookd_config(run.tmp / "state-idle", port)
    server = start_runbookd(run.procs, run.tmp, "runbookd-idle", config)
    try:
        rss, cpu = _settled_rss(server)
    finally:
        run.procs.stop(server.proc)
    return {"rss_mb": rss, "cpu_percent": cpu}


def populated(run: Run, name: str, incidents: int) -> Path:
    """A state directory (under the run's tmp) whose store holds `incidents` resolved ones."""
    state = run.tmp / name
    state.mkdir()
    populate = run.procs.spawn(
        f"populate-{name}",
        [sys.executable, "-m", "bench.populate", str(state / "runbookd.db"), str(incidents)],
        cwd=REPO,
    )
    if populate.popen.wait(timeout=300) != 0:
        raise BenchError(f"populate failed:\n{populate.tail()}")
    run.procs.stop(populate)
    return state


def with_incidents(run: Run) -> dict[str, Any]:
    n = run.params.incidents
    log(f"footprint: runbookd over a store of {n} incidents")
    state = populated(run, "state-incidents", n)
    port = free_port()
    config = runbookd_config(state, port)
    server = start_runbookd(run.procs, run.tmp, "runbookd-incidents", config)
    try:
        rss, cpu = _settled_rss(server)
        timings = []
        listed = 0
        for _ in range(3):
            started = time.monotonic()
            code, body = http_get(f"{server.url}/api/v1/incidents?limit=100&status=resolved")
            timings.append(1000 * (time.monotonic() - started))
            if code != 200:
                raise BenchError(f"GET /api/v1/incidents: HTTP {code}")
            listed = body.count(b'"id"')
        rss_after = m.rss_bytes(server.pid) / 1e6
    finally:
        run.procs.stop(server.proc)
    return {
        "incidents": n,
        "rss_mb": rss,
        "rss_mb_after_listing": rss_after,
        "cpu_percent": cpu,
        "list_100_ms": m.median(timings),
        "listed": listed,
    }


def cold_starts(run: Run, earlier: list[float]) -> dict[str, Any]:
    """Spawn to /readyz 200. `earlier`: spawn-to-ready times of daemons started the same way
    (scenario 1's, when it ran the same number of checks), counted as trials too."""
    p, nginx = run.params, run.nginx
    assert nginx is not None
    n = p.cold_start_checks
    more = max(0, p.cold_starts - len(earlier))
    log(f"footprint: {more} cold starts with {n} checks (+{len(earlier)} from scenario 1)")
    port = free_port()
    config = runbookd_config(
        run.tmp / "state-cold", port, checks=http_checks(f"{nginx.url}/health", n)
    )
    path = write_runbookd_config(run.tmp, "runbookd-cold", config)
    trials: list[dict[str, Any]] = [
        {"ready_s": t, "listening_s": math.nan, "from": "scenario 1"} for t in earlier
    ]
    for _ in range(more):
        spawned = time.monotonic()
        proc = spawn_runbookd(run.procs, "runbookd-cold", path)
        try:
            listening = wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60)
            ready = wait_http(f"http://127.0.0.1:{port}/readyz", proc, 60)
            total = time.monotonic() - spawned
            _first_round(f"http://127.0.0.1:{port}/readyz", 60)
            first_round = time.monotonic() - spawned
        finally:
            run.procs.stop(proc)
        trials.append(
            {
                "listening_s": listening,
                "ready_s": total,
                "ready_after_listening_s": ready,
                "first_round_s": first_round,
            }
        )
    return {
        "checks": n,
        "trials": trials,
        "ready_s": m.median(t["ready_s"] for t in trials),
        "listening_s": m.median(t["listening_s"] for t in trials),
        "first_round_s": m.median(t.get("first_round_s", math.nan) for t in trials),
    }


def _first_round(url: str, timeout: float) -> None:
    """Until /readyz says every check has run once (its `checks_run` = `checks`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = http_get(url, timeout=1.0)
        doc = json.loads(body) if code == 200 else {}
        if doc.get("checks") and doc.get("checks_run") == doc.get("checks"):
            return
        time.sleep(0.005)
    raise BenchError(f"{url}: the first round did not finish within {timeout:g}s")


def _earlier_starts(run: Run, polling: dict[str, Any] | None) -> list[float]:
    if polling is None or run.params.checks != run.params.cold_start_checks:
        return []
    return [polling["runbookd"]["spawn_to_ready_s"]]


def scenario(run: Run, polling: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "idle": idle(run),
        "incidents": with_incidents(run),
        "cold_start": cold_starts(run, _earlier_starts(run, polling)),
    }
    if polling is not None:
        out["with_checks"] = {
            "checks": run.params.checks,
            "runbookd_rss_mb": polling["runbookd"]["median"]["rss_mb"],
            "prometheus_rss_mb": polling.get("prometheus", {})
            .get("median", {})
            .get("rss_mb", math.nan),
        }
    report(run, out)
    return out


def report(run: Run, out: dict[str, Any]) -> None:
    s = "4 footprint"
    idle_rss = out["idle"]["rss_mb"]
    run.row(s, "idle RSS (no checks)", idle_rss, "MB", target=("<=", 60.0, "<= 60 MB"))
    if "with_checks" in out:
        wc = out["with_checks"]
        run.row(
            s,
            f"RSS with {wc['checks']} checks vs Prometheus at {wc['checks']} targets",
            wc["runbookd_rss_mb"],
            "MB",
            peer=wc["prometheus_rss_mb"],
            peer_name="prometheus",
            ratio=m.ratio(wc["runbookd_rss_mb"], wc["prometheus_rss_mb"]),
            target=("<=", 1.0, "<= 1.0x"),
        )
    inc = out["incidents"]
    run.row(
        s,
        f"RSS over {inc['incidents']} stored incidents",
        inc["rss_mb"],
        "MB",
        note=f"+{inc['rss_mb'] - idle_rss:.1f} MB over idle; list 100: {inc['list_100_ms']:.0f} ms",
    )
    cold = out["cold_start"]
    run.row(
        s,
        f"cold start to /readyz 200 ({cold['checks']} checks)",
        cold["ready_s"],
        "s",
        target=("<=", 1.0, "<= 1 s"),
        note=f"listening after {cold['listening_s']:.2f} s",
    )
    run.row(
        s,
        f"(reference) start to every check run once ({cold['checks']} checks)",
        cold["first_round_s"],
        "s",
        note="checks spread over their 1 s interval (jitter 1.0)",
    )
