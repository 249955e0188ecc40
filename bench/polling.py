"""Scenario 1, polling cost: N http checks at 1 s against nginx, and the peers doing the same
work: Prometheus scraping N targets at 1 s, blackbox_exporter probing (driven by wrk), and the
bare aiohttp floor. One process at a time, so they do not compete for the cores."""

from __future__ import annotations

import itertools
import json
import math
import re
import time
import urllib.parse
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import measure as m
from bench.harness import Run, log
from bench.peers import (
    Server,
    http_checks,
    nginx_access_log,
    runbookd_config,
    start_blackbox,
    start_prometheus,
    start_runbookd,
    start_worker,
)
from bench.procs import BenchError, free_port, http_get, run_to_end
from bench.worker import ask

RUNBOOKD_SERIES = (
    "runbookd_check_runs_total",
    "runbookd_check_runs_skipped_total",
    "runbookd_schedule_lateness_seconds_bucket",
)
LATENESS = "runbookd_schedule_lateness_seconds"
PROM_SCRAPES = "prometheus_target_interval_length_seconds_count"
PROM_SETTLE_TIMEOUT = 90.0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def _reaped_cpu(pid: int) -> float:
    """cutime + cstime: the CPU of children that ended and were waited for (a worker that a
    restart replaced), so that the tree's total does not drop when one goes."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[13]) + int(fields[14])) / m.CLK_TCK


def tree_cpu(pid: int) -> tuple[float, dict[str, float]]:
    """CPU seconds of `pid` and its children (runbookd's check workers), and per process:
    runbookd's CPU is its whole process tree's."""
    per = {"main": m.cpu_seconds(pid) + _reaped_cpu(pid)}
    for index, child in enumerate(sorted(_children(pid))):
        try:
            per[f"child{index}"] = m.cpu_seconds(child)
        except OSError:
            continue  # it ended between the listing and the read: cutime has it next time
    return sum(per.values()), per


def tree_rss(pid: int) -> int:
    total = m.rss_bytes(pid)
    for child in _children(pid):
        try:
            total += m.rss_bytes(child)
        except (OSError, ValueError):
            continue
    return total


@dataclass(frozen=True)
class Snap:
    """A boundary between windows: CPU read before and after the counters were fetched. A
    window runs from one fetch's start to the next's, so it holds one fetch, as a daemon that
    Prometheus scrapes would; the fetch's own cost is reported apart too."""

    t0: float
    t1: float
    cpu0: float
    cpu1: float
    rss: int
    counters: dict[str, Any]
    per_process: dict[str, float]  # CPU seconds at t0, by process of the tree


def _snap(pid: int, fetch: Any, tree: bool) -> Snap:
    if tree:
        cpu0, per = tree_cpu(pid)
    else:
        cpu0, per = m.cpu_seconds(pid), {}
    t0 = time.monotonic()
    counters = fetch()
    t1 = time.monotonic()
    cpu1 = tree_cpu(pid)[0] if tree else m.cpu_seconds(pid)
    rss = tree_rss(pid) if tree else m.rss_bytes(pid)
    return Snap(t0, t1, cpu0, cpu1, rss, counters, per)


def _windows(run: Run, pid: int, fetch: Any, tree: bool = False) -> list[tuple[Snap, Snap]]:
    """`windows` consecutive windows of `window` seconds each, after the warm-up. `tree`:
    CPU and RSS of the process and its children (runbookd and its check workers)."""
    p = run.params
    snaps = [_snap(pid, fetch, tree)]
    for _ in range(p.windows):
        time.sleep(max(0.0, p.window - (time.monotonic() - snaps[-1].t1)))
        snaps.append(_snap(pid, fetch, tree))
    return list(itertools.pairwise(snaps))


def _shares(a: Snap, b: Snap) -> dict[str, float]:
    """Share of a core (%) per process of the tree over the window."""
    wall = _wall(a, b)
    return {k: 100 * (b.per_process.get(k, v) - v) / wall for k, v in a.per_process.items()}


def _cpu(a: Snap, b: Snap) -> float:
    return b.cpu0 - a.cpu0


def _wall(a: Snap, b: Snap) -> float:
    """From one fetch's start to the next's, one fetch included: the runs counted between two
    snapshots happened in this span, give or take the runs that finish while a fetch renders
    (a 10 s window at 5,000 checks/s holds 50,000 runs; a fetch lasts ~0.1 s)."""
    return b.t0 - a.t0


# -- runbookd ---------------------------------------------------------------------------------

DEFAULT_JITTER = 1.0  # checks.base.CheckConfig.jitter
INTERVAL = 1.0
BINS = 1000  # 1 ms bins over the interval
MIN_GAP_MS = 100.0  # below this empty stretch, target-side lateness cannot be told


def check_phase(name: str, jitter: float) -> float:
    """When in each interval a check is due, as the scheduler's `phase` computes it."""
    return (zlib.crc32(name.encode()) / 2**32) * jitter * INTERVAL


def target_lateness(
    log: Path, n: int, jitter: float, start: float, end: float, parts: int = 3
) -> dict[str, Any]:
    """Lateness as the target saw it, in a window without /metrics fetches.

    nginx logs each check request's arrival (`$msec`, the `c` query argument). Check c is due
    at t0 + phase(c) + k s, t0 being the daemon's start, the same for every check. The
    residues (arrival - phase) mod 1 s thus sit at t0 mod 1 s plus each run's lateness: t0's
    fraction is where they begin, after the widest empty stretch of the circle. Valid while
    lateness stays well under the interval (`gap_ms` is that empty stretch); a lower bound
    by the request's travel time (well under a millisecond on loopback). The window is cut in
    `parts` equal parts; the figures are the medians of the parts' quantiles.
    """
    phases = [check_phase(f"web_{i:05d}", jitter) for i in range(n)]
    arrivals: dict[int, list[float]] = {}
    for line in log.read_text().splitlines():
        at, _, c = line.partition(" ")
        if c.isdigit() and int(c) < n and start <= float(at) <= end:
            arrivals.setdefault(int(c), []).append(float(at))
    timed = [(t, (t - phases[c]) % INTERVAL) for c, ts in arrivals.items() for t in ts]
    residues = [r for _, r in timed]
    if not residues:
        return {"arrivals": 0.0}
    used = [False] * BINS
    for r in residues:
        used[int(r / INTERVAL * BINS) % BINS] = True
    # The widest circular run of empty bins ends just before t0's fraction.
    best_len, best_end, run_len = 0, 0, 0
    for i in range(2 * BINS):
        if used[i % BINS]:
            run_len = 0
            continue
        run_len += 1
        if run_len > best_len:
            best_len, best_end = run_len, (i + 1) % BINS
    origin = best_end * INTERVAL / BINS
    span = (end - start) / parts
    cuts: list[list[float]] = [[] for _ in range(parts)]
    for t, r in timed:
        cuts[min(parts - 1, int((t - start) / span))].append(1000 * ((r - origin) % INTERVAL))
    per_part = [
        {
            "runs": float(len(c)),
            "p50_ms": m.percentile(c, 0.50),
            "p99_ms": m.percentile(c, 0.99),
            "max_ms": max(c, default=math.nan),
        }
        for c in cuts
    ]
    skips = 0
    for ts in arrivals.values():
        ts.sort()
        skips += sum(round(b - a) - 1 for a, b in itertools.pairwise(ts) if b - a > 1.5)
    gap_ms = best_len * 1000 * INTERVAL / BINS
    out: dict[str, Any] = {
        "arrivals": float(len(residues)),
        "gap_ms": gap_ms,
        "skips": float(skips),
        "p50_ms": m.median(part["p50_ms"] for part in per_part),
        "p99_ms": m.median(part["p99_ms"] for part in per_part),
        "max_ms": m.median(part["max_ms"] for part in per_part),
        "parts": per_part,
    }
    if gap_ms < MIN_GAP_MS:
        # Runs start all around the interval: lateness wraps, the origin cannot be found.
        out.update(p50_ms=math.nan, p99_ms=math.nan, max_ms=math.nan)
    return out


def _runbookd_counters(server: Server) -> dict[str, Any]:
    started = time.monotonic()
    code, body = http_get(f"{server.url}/metrics", timeout=60)
    took = time.monotonic() - started
    if code != 200:
        raise BenchError(f"runbookd /metrics: HTTP {code}")
    found = m.samples(body.decode(), RUNBOOKD_SERIES)
    return {
        "runs": m.total(found, "runbookd_check_runs_total"),
        "ok": m.total(found, "runbookd_check_runs_total", status="ok"),
        "skipped": m.total(found, "runbookd_check_runs_skipped_total"),
        "lateness": m.buckets(found, LATENESS),
        "bytes": len(body),
        "seconds": took,
    }


def measure_runbookd(
    run: Run,
    jitter: float | None,
    label: str,
    counted: bool = True,
    *,
    n: int | None = None,
    processes: int | str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`counted`: the windows bounded by /metrics fetches; without, only the window seen by
    the target (no fetch at all). `n` checks (default: the run's size); `processes`: the
    `runbookd.check_processes` setting (default: the daemon's, auto). CPU and RSS are those of
    the daemon's process tree: the daemon and its check workers."""
    p, nginx = run.params, run.nginx
    assert nginx is not None
    n = p.checks if n is None else n
    port = free_port()
    checks = http_checks(f"{nginx.url}/health", n, jitter=jitter)
    settings = {} if processes is None else {"check_processes": processes}
    settings |= extra or {}
    config = runbookd_config(run.tmp / f"state-{label}", port, checks=checks, settings=settings)
    log(f"polling: runbookd, {n} http checks at 1s ({label})")
    server = start_runbookd(run.procs, run.tmp, f"runbookd-{label}", config)
    try:
        time.sleep(p.warmup)
        fetch = lambda: _runbookd_counters(server)  # noqa: E731
        pairs = _windows(run, server.pid, fetch, tree=True) if counted else []
        workers = len(_children(server.pid))
        rss_end = pairs[-1][1].rss if pairs else tree_rss(server.pid)
        # One more window without any /metrics fetch: lateness as the target sees it.
        time.sleep(1.0)  # the last fetch's stall drains
        quiet_start = time.time()
        time.sleep(p.window)
        quiet_end = time.time()
        windows = []
        for a, b in pairs:
            runs = b.counters["runs"] - a.counters["runs"]
            cpu = _cpu(a, b)
            late = m.bucket_delta(b.counters["lateness"], a.counters["lateness"])
            windows.append(
                {
                    "seconds": _wall(a, b),
                    "cpu_s": cpu,
                    "runs": runs,
                    "runs_not_ok": runs - (b.counters["ok"] - a.counters["ok"]),
                    "runs_per_s": runs / _wall(a, b),
                    "cpu_us_per_check": 1e6 * cpu / runs if runs else float("nan"),
                    "cpu_percent": 100 * cpu / _wall(a, b),
                    "cpu_percent_by_process": _shares(a, b),
                    "lateness_p50_ms": 1000 * m.histogram_quantile(0.50, late),
                    "lateness_p99_ms": 1000 * m.histogram_quantile(0.99, late),
                    "lateness_p99_bucket_ms": [1000 * b for b in m.quantile_bucket(0.99, late)],
                    "lateness_buckets": {str(k): v for k, v in late.items()},
                    "skipped": b.counters["skipped"] - a.counters["skipped"],
                    "rss_mb": b.rss / 1e6,
                    # The harness's own /metrics fetch at the window's start.
                    "metrics_fetch_cpu_ms": 1000 * (a.cpu1 - a.cpu0),
                    "metrics_fetch_wall_ms": 1000 * (a.t1 - a.t0),
                    "metrics_bytes": a.counters["bytes"],
                }
            )
    finally:
        run.procs.stop(server.proc)
    time.sleep(1.2)  # nginx flushes its log buffer every second
    quiet = target_lateness(
        nginx_access_log(run.tmp),
        n,
        DEFAULT_JITTER if jitter is None else jitter,
        quiet_start,
        quiet_end,
    )
    return {
        "label": label,
        "target_side_lateness": quiet,
        "checks": n,
        "check_processes": "auto" if processes is None else processes,
        "worker_processes": workers,
        "jitter": jitter if jitter is not None else f"default ({DEFAULT_JITTER:g})",
        "spawn_to_ready_s": server.ready_s,
        "windows": windows,
        "median": _medians(windows),
        "total_skipped": sum(w["skipped"] for w in windows),
        "rss_mb_end": rss_end / 1e6,
    }


def _medians(windows: list[dict[str, Any]]) -> dict[str, float]:
    if not windows:
        return {}
    keys = [k for k, v in windows[0].items() if isinstance(v, int | float)]
    return {k: m.median(w[k] for w in windows) for k in keys}


# -- Prometheus -------------------------------------------------------------------------------


def _prom_counters(server: Server) -> dict[str, Any]:
    code, body = http_get(f"{server.url}/metrics", timeout=30)
    if code != 200:
        raise BenchError(f"prometheus /metrics: HTTP {code}")
    found = m.samples(body.decode(), (PROM_SCRAPES,))
    return {"scrapes": m.total(found, PROM_SCRAPES)}


def _targets_up(server: Server) -> float:
    query = urllib.parse.urlencode({"query": 'sum(up{job="bench"})'})
    code, body = http_get(f"{server.url}/api/v1/query?{query}", timeout=30)
    result = json.loads(body)["data"]["result"] if code == 200 else []
    return float(result[0]["value"][1]) if result else float("nan")


def measure_prometheus(run: Run, n: int | None = None) -> dict[str, Any]:
    p, nginx = run.params, run.nginx
    assert nginx is not None
    n = p.checks if n is None else n
    log(f"polling: Prometheus, {n} targets at 1s")
    server = start_prometheus(run.procs, run.tmp, nginx.port, n)
    try:
        # Starting thousands of scrape loops takes Prometheus a while (first scrapes time out
        # meanwhile): measure once every target is up, as runbookd's windows start once
        # every check has run.
        started = time.monotonic()
        up_before = _targets_up(server)
        # (NaN, no answer yet, is not "all up" either.)
        while not up_before >= n and time.monotonic() - started < PROM_SETTLE_TIMEOUT:
            time.sleep(1.0)
            up_before = _targets_up(server)
        settled = time.monotonic() - started
        time.sleep(p.warmup)
        pairs = _windows(run, server.pid, lambda: _prom_counters(server))
        up = _targets_up(server)
        windows = []
        for a, b in pairs:
            scrapes = b.counters["scrapes"] - a.counters["scrapes"]
            cpu = _cpu(a, b)
            windows.append(
                {
                    "seconds": _wall(a, b),
                    "cpu_s": cpu,
                    "scrapes": scrapes,
                    "scrapes_per_s": scrapes / _wall(a, b),
                    "cpu_us_per_scrape": 1e6 * cpu / scrapes if scrapes else float("nan"),
                    "cpu_percent": 100 * cpu / _wall(a, b),
                    "rss_mb": b.rss / 1e6,
                }
            )
    finally:
        run.procs.stop(server.proc)
    return {
        "targets": n,
        "all_up_after_s": settled,
        "targets_up_before": up_before,
        "targets_up": up,
        "windows": windows,
        "median": _medians(windows),
    }


# -- blackbox_exporter ------------------------------------------------------------------------

_WRK_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(m?s)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def wrk(run: Run, url: str, seconds: float, connections: int = 10) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", url]
    text = run_to_end(run.procs, "wrk", argv, timeout=seconds + 30)
    found = _WRK_REQUESTS.search(text)
    if found is None:
        raise BenchError(f"wrk: no request count in its output:\n{text}")
    took = float(found[2]) / (1000 if found[3] == "ms" else 1)
    non2xx = _WRK_NON2XX.search(text)
    errors = _WRK_ERRORS.search(text)
    return {
        "requests": float(found[1]),
        "seconds": took,
        "non_2xx": float(non2xx[1]) if non2xx else 0.0,
        "socket_errors": float(sum(int(x) for x in errors.groups())) if errors else 0.0,
    }


def measure_blackbox(run: Run) -> dict[str, Any]:
    p, nginx = run.params, run.nginx
    assert nginx is not None
    log("polling: blackbox_exporter, http_2xx probes driven by wrk -c10")
    server = start_blackbox(run.procs, run.tmp)
    target = urllib.parse.quote(f"{nginx.url}/health", safe="")
    url = f"{server.url}/probe?target={target}&module=http_2xx"
    try:
        code, body = http_get(url)
        if code != 200 or b"probe_success 1" not in body:
            raise BenchError(f"blackbox probe failed: HTTP {code}\n{body[:500]!r}")
        wrk(run, url, 1.0)  # warm-up
        windows = []
        for _ in range(p.windows):
            cpu0 = m.cpu_seconds(server.pid)
            result = wrk(run, url, p.probe_window)
            cpu = m.cpu_seconds(server.pid) - cpu0
            windows.append(
                {
                    "seconds": result["seconds"],
                    "cpu_s": cpu,
                    "probes": result["requests"],
                    "probes_per_s": result["requests"] / result["seconds"],
                    "cpu_us_per_probe": 1e6 * cpu / result["requests"],
                    "cpu_percent": 100 * cpu / result["seconds"],
                    "errors": result["non_2xx"] + result["socket_errors"],
                    "rss_mb": m.rss_bytes(server.pid) / 1e6,
                }
            )
    finally:
        run.procs.stop(server.proc)
    return {"windows": windows, "median": _medians(windows)}


# -- the Python floor -------------------------------------------------------------------------


def measure_floor(
    run: Run, mode: str, client: str = "aiohttp", n: int | None = None
) -> dict[str, Any]:
    """`paced`: N GETs per second spread like N checks at 1 s; `saturated`: wrk-like, c=10.
    `client`: aiohttp's ClientSession, or `raw` (an asyncio protocol, bench/floor_raw.py)."""
    p, nginx = run.params, run.nginx
    assert nginx is not None
    n = p.checks if n is None else n
    log(f"polling: bare {client} floor ({mode}, {n})")
    args = ["--url", f"{nginx.url}/health", "--mode", mode, "--names", str(n)]
    args += ["--client", client]
    proc = start_worker(run.procs, f"floor-{client}-{mode}", "floor", *args)
    window = p.window if mode == "paced" else p.probe_window
    try:
        ask(proc, {"op": "count"}, timeout=30)  # imported and running
        time.sleep(1.0)
        windows = []
        for _ in range(p.windows):
            cpu0, t0 = m.cpu_seconds(proc.pid), time.monotonic()
            first = ask(proc, {"op": "count"}, timeout=30)
            time.sleep(window)
            last = ask(proc, {"op": "count"}, timeout=30)
            cpu, seconds = m.cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
            done = last["done"] - first["done"]
            windows.append(
                {
                    "seconds": seconds,
                    "cpu_s": cpu,
                    "gets": done,
                    "gets_per_s": done / seconds,
                    "cpu_us_per_get": 1e6 * cpu / done if done else float("nan"),
                    "cpu_percent": 100 * cpu / seconds,
                    "errors": last["errors"] - first["errors"],
                    "skipped": last["skipped"] - first["skipped"],
                    "rss_mb": m.rss_bytes(proc.pid) / 1e6,
                }
            )
    finally:
        run.procs.stop(proc)
    return {"mode": mode, "client": client, "windows": windows, "median": _medians(windows)}


# -- the scenario -----------------------------------------------------------------------------


def scenario(run: Run) -> dict[str, Any]:
    """Each part on its own: a peer that fails leaves its figures empty, not the scenario."""
    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("runbookd", lambda: measure_runbookd(run, None, "default"))
    ]
    if run.params.bunched_variant:
        counted = run.params.bunched_counted
        parts.append(("runbookd_bunched", lambda: measure_runbookd(run, 0.1, "bunched", counted)))
    parts += [
        ("prometheus", lambda: measure_prometheus(run)),
        ("blackbox", lambda: measure_blackbox(run)),
        ("floor_paced", lambda: measure_floor(run, "paced")),
        ("floor_raw_paced", lambda: measure_floor(run, "paced", "raw")),
        ("floor_saturated", lambda: measure_floor(run, "saturated")),
    ]
    sizes = run.params.polling_sizes
    for n in sizes:
        parts += [
            (f"runbookd_{n}", lambda n=n: measure_runbookd(run, None, f"default-{n}", n=n)),
            (f"prometheus_{n}", lambda n=n: measure_prometheus(run, n)),
            (f"floor_raw_paced_{n}", lambda n=n: measure_floor(run, "paced", "raw", n)),
        ]
    if sizes:
        n = max(sizes)
        for procs in run.params.polling_process_variants:
            label = f"processes{procs}-{n}"
            parts.append(
                (f"runbookd_{n}_processes_{procs}", _variant(run, label, n, procs)),
            )
    out: dict[str, Any] = {"errors": {}}
    for key, part in parts:
        try:
            out[key] = part()
        except Exception as exc:  # reported in the results; the other parts go on
            log(f"polling: {key} failed: {exc}")
            out["errors"][key] = str(exc)
    if "runbookd" not in out:
        raise BenchError(f"runbookd could not be measured: {out['errors']['runbookd']}")
    report(run, out)
    for n in sizes:
        report_size(run, out, n)
    return out


def _variant(run: Run, label: str, n: int, processes: int) -> Callable[[], dict[str, Any]]:
    return lambda: measure_runbookd(run, None, label, n=n, processes=processes)


def report_size(run: Run, out: dict[str, Any], n: int) -> None:
    """The rows of one further size: runbookd (its process tree) against Prometheus."""
    s = f"1 polling ({n} checks/s)"
    prom = _median_of(out, f"prometheus_{n}")
    raw = _median_of(out, f"floor_raw_paced_{n}")
    variants = [(f"runbookd_{n}", "check_processes auto")] + [
        (f"runbookd_{n}_processes_{p}", f"check_processes {p}")
        for p in run.params.polling_process_variants
        if n == max(run.params.polling_sizes)
    ]
    for key, name in variants:
        if key not in out:
            continue
        variant = out[key]
        med = defaultdict(lambda: math.nan, variant["median"])
        us = med["cpu_us_per_check"]
        main = key == f"runbookd_{n}"
        workers = f"{variant['worker_processes']} worker processes"
        run.row(
            s,
            f"{name}: CPU per check (daemon + workers) vs Prometheus per scrape",
            us,
            "µs",
            peer=prom["cpu_us_per_scrape"],
            peer_name="prometheus",
            ratio=m.ratio(us, prom["cpu_us_per_scrape"]),
            target=("<=", 0.5, "<= 0.5x") if main else None,
            note=f"{workers}; raw floor {raw['cpu_us_per_get']:.1f} µs per GET; "
            + _prom_size_note(out.get(f"prometheus_{n}")),
        )
        run.row(s, f"{name}: checks completed per second", med["runs_per_s"], "/s")
        late_target = ("<=", 50.0, "<= 50 ms") if main else None
        run.row(
            s,
            f"{name}: schedule lateness p99",
            med["lateness_p99_ms"],
            "ms",
            target=late_target,
            note=_bucket_note(variant),
        )
        quiet = variant["target_side_lateness"]
        run.row(
            s,
            f"{name}: lateness p99 seen by nginx, no /metrics fetch",
            quiet.get("p99_ms"),
            "ms",
            target=late_target,
            note=_quiet_note(quiet),
        )
        run.row(
            s,
            f"{name}: skipped runs (all windows)",
            variant["total_skipped"],
            "",
            target=("==", 0.0, "= 0") if main else None,
            note=f"of {sum(w['runs'] for w in variant['windows']):.0f} runs",
        )
        shares = variant["windows"][len(variant["windows"]) // 2]["cpu_percent_by_process"]
        run.row(
            s,
            f"{name}: CPU (one core = 100%), daemon + workers",
            med["cpu_percent"],
            "%",
            peer=prom["cpu_percent"],
            peer_name="prometheus",
            note="middle window: " + ", ".join(f"{k} {v:.0f}%" for k, v in shares.items()),
        )
        run.row(
            s,
            f"{name}: RSS (daemon + workers)",
            med["rss_mb"],
            "MB",
            peer=prom["rss_mb"],
            peer_name="prometheus",
            ratio=m.ratio(med["rss_mb"], prom["rss_mb"]),
        )


def _prom_size_note(prom: dict[str, Any] | None) -> str:
    """Prometheus's figure holds only as far as its targets were up and scraped."""
    if not prom:
        return "prometheus: not measured"
    scrapes = prom.get("median", {}).get("scrapes_per_s", math.nan)
    return (
        f"prometheus: {prom['targets_up']:.0f}/{prom['targets']} targets up at the end, "
        f"{scrapes:.0f} scrapes/s"
    )


def _median_of(out: dict[str, Any], key: str) -> defaultdict[str, float]:
    """A part's medians; NaN for every figure of a part that failed."""
    found = out.get(key, {}).get("median", {})
    return defaultdict(lambda: math.nan, found)


def report(run: Run, out: dict[str, Any]) -> None:
    n = run.params.checks
    s = f"1 polling ({n} checks/s)"
    rb = out["runbookd"]["median"]
    prom = _median_of(out, "prometheus")
    bb = _median_of(out, "blackbox")
    floor = _median_of(out, "floor_paced")
    raw = _median_of(out, "floor_raw_paced")
    sat = _median_of(out, "floor_saturated")
    us = rb["cpu_us_per_check"]
    run.row(
        s,
        "CPU per check vs Prometheus per scrape",
        us,
        "µs",
        peer=prom["cpu_us_per_scrape"],
        peer_name="prometheus",
        ratio=m.ratio(us, prom["cpu_us_per_scrape"]),
        target=("<=", 0.5, "<= 0.5x"),
        note=_prom_note(out),
    )
    run.row(
        s,
        "CPU per check vs blackbox per probe",
        us,
        "µs",
        peer=bb["cpu_us_per_probe"],
        peer_name="blackbox (wrk -c10)",
        ratio=m.ratio(us, bb["cpu_us_per_probe"]),
        target=("<=", 0.35, "<= 0.35x"),
    )
    run.row(
        s,
        "CPU per check vs aiohttp floor per GET (same rate)",
        us,
        "µs",
        peer=floor["cpu_us_per_get"],
        peer_name="floor (paced)",
        ratio=m.ratio(us, floor["cpu_us_per_get"]),
        target=("<=", 1.5, "<= 1.5x"),
        note=f"floor: {floor['gets_per_s']:.0f} GET/s done, {floor['skipped']:.0f} skipped",
    )
    run.row(
        s,
        "CPU per check vs raw-protocol floor per GET (same rate)",
        us,
        "µs",
        peer=raw["cpu_us_per_get"],
        peer_name="raw floor (paced)",
        ratio=m.ratio(us, raw["cpu_us_per_get"]),
        note=f"raw floor: {raw['gets_per_s']:.0f} GET/s done, {raw['skipped']:.0f} skipped; "
        f"aiohttp floor ÷ raw floor {m.ratio(floor['cpu_us_per_get'], raw['cpu_us_per_get']):.2f}x",
    )
    run.row(
        s,
        "(reference) floor saturated, c=10",
        None,
        "µs",
        peer=sat["cpu_us_per_get"],
        peer_name=f"floor ({sat['gets_per_s']:.0f} GET/s)",
        ratio=m.ratio(us, sat["cpu_us_per_get"]),
    )
    run.row(s, "checks completed per second", rb["runs_per_s"], "/s", note=f"of {n} due")
    run.row(
        s,
        "CPU (one core = 100%)",
        rb["cpu_percent"],
        "%",
        peer=prom["cpu_percent"],
        peer_name="prometheus",
    )
    for key, name in (("runbookd", "default jitter"), ("runbookd_bunched", "jitter 0.1")):
        if key not in out:
            continue
        variant = out[key]
        # The targets apply to the default schedule; the bunched one shows what spreading buys.
        late_target = ("<=", 50.0, "<= 50 ms") if key == "runbookd" else None
        skip_target = ("==", 0.0, "= 0") if key == "runbookd" else None
        med = variant["median"]
        if med and key != "runbookd":
            run.row(s, f"{name}: CPU per check", med["cpu_us_per_check"], "µs")
        if med:
            run.row(s, f"{name}: schedule lateness p50", med["lateness_p50_ms"], "ms")
            run.row(
                s,
                f"{name}: schedule lateness p99",
                med["lateness_p99_ms"],
                "ms",
                target=late_target,
                note=_bucket_note(variant),
            )
        quiet = variant["target_side_lateness"]
        run.row(
            s,
            f"{name}: lateness p99 seen by nginx, no /metrics fetch",
            quiet.get("p99_ms"),
            "ms",
            target=late_target,
            note=_quiet_note(quiet),
        )
        if med:
            run.row(
                s,
                f"{name}: skipped runs (all windows)",
                variant["total_skipped"],
                "",
                target=skip_target,
                note=f"of {sum(w['runs'] for w in variant['windows']):.0f} runs",
            )
    run.row(
        s,
        "RSS",
        rb["rss_mb"],
        "MB",
        peer=prom["rss_mb"],
        peer_name="prometheus",
        ratio=m.ratio(rb["rss_mb"], prom["rss_mb"]),
    )
    run.row(
        s,
        "one /metrics fetch: CPU while it renders (checks keep running)",
        rb["metrics_fetch_cpu_ms"],
        "ms",
        note=f"{rb['metrics_fetch_wall_ms']:.0f} ms wall, {rb['metrics_bytes'] / 1e6:.1f} MB",
    )


def _quiet_note(quiet: dict[str, float]) -> str:
    skipped = f"{quiet.get('arrivals', 0):.0f} runs, {quiet.get('skips', math.nan):.0f} skipped"
    if math.isnan(quiet.get("p99_ms", math.nan)):
        return f"n/a: runs start all over the interval (saturated); {skipped}"
    return f"p50 {quiet['p50_ms']:.0f} ms, max {quiet['max_ms']:.0f} ms, {skipped}"


def _prom_note(out: dict[str, Any]) -> str:
    prom = out.get("prometheus")
    if prom is None:
        return f"prometheus failed: {out['errors'].get('prometheus', '?')}"
    return (
        f"targets up {prom['targets_up']:.0f}/{prom['targets']} at the end; "
        f"{prom['median']['scrapes_per_s']:.0f} scrapes/s"
    )


def _bucket_note(variant: dict[str, Any]) -> str:
    """Histogram quantiles are only as precise as the bucket they fall in: say which."""
    windows = sorted(variant["windows"], key=lambda w: w["lateness_p99_ms"])
    lower, upper = windows[len(windows) // 2]["lateness_p99_bucket_ms"]
    return f"in the ({lower:g}, {upper:g}] ms bucket"
