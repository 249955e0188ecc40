"""Scenario 2, alert intake: Alertmanager-shaped alerts posted to runbookd's webhook and, with
the same batches, to Alertmanager's own POST /api/v2/alerts, by one generator process.

Per system and batch size (1 and 10 alerts per request), on a fresh daemon:
  new    `windows` closed-loop windows, every alert a new fingerprint (peak rate)
  dedup  the same alerts again, window by window (deduplication)
  paced  open loop at 80% of the new-pass peak, new fingerprints: latency under load
Then every posted alert must be accounted for: the daemon's received counter = alerts sent.
"""

from __future__ import annotations

import time
from typing import Any

from bench import measure as m
from bench.alertgen import NAMES
from bench.harness import Run, log
from bench.peers import Server, runbookd_config, start_alertmanager, start_runbookd, start_worker
from bench.procs import BenchError, Proc, free_port, http_get
from bench.worker import ask

MATCHED_NAMES = (0, 1)  # rules on BenchAlert0 and BenchAlert1: a fifth of the alerts match
BATCHES = (1, 10)
WARMUP_CAP = 20_000  # alerts prepared for the 0.5 s warm-up (more than anything here sends)
# Alertmanager keeps every alert it is sent; runbookd caps the firing alerts it holds
# (runbookd.alerts, 5,000 per rule by default) and would refuse most of what is measured here.
UNCAPPED = {"alerts": {"max_firing_per_rule": 1_000_000, "max_firing": 1_000_000}}
WARMUP_BASE = 900_000_000  # fingerprints of the warm-up, apart from the measured ones


def intake_rules() -> dict[str, Any]:
    # No `do:`: a matching new alert opens (or joins) an incident, and nothing calls out.
    return {f"alert_{k}": {"when": {"alert": f"BenchAlert{k}"}} for k in MATCHED_NAMES}


def unmatched_rules() -> dict[str, Any]:
    """Rules no bench alert matches: each alert is parsed, routed and counted, nothing else."""
    return {"alert_never": {"when": {"alert": "NeverSent"}}}


def expected_matches(start: int, count: int, matching: bool = True) -> int:
    if not matching:
        return 0
    return sum(1 for k in range(start, start + count) if k % NAMES in MATCHED_NAMES)


class Target:
    """runbookd or Alertmanager, as the generator and the harness see it."""

    def __init__(self, name: str, server: Server, fmt: str) -> None:
        self.name = name
        self.server = server
        self.format = fmt
        path = "/api/v1/alerts" if fmt == "runbookd" else "/api/v2/alerts"
        self.url = f"{server.url}{path}"

    def received(self) -> float:
        code, body = http_get(f"{self.server.url}/metrics", timeout=60)
        if code != 200:
            raise BenchError(f"{self.name} /metrics: HTTP {code}")
        if self.format == "runbookd":
            name = "runbookd_alerts_received_total"
        else:
            name = "alertmanager_alerts_received_total"
        return m.total(m.samples(body.decode(), (name,)), name)


def _post(
    run: Run,
    gen: Proc,
    target: Target,
    *,
    batch: int,
    start: int,
    count: int,
    seconds: float,
    rate: float | None = None,
) -> dict[str, Any]:
    """One measured window: the target's CPU around the generator's "go"."""
    command = {
        "op": "prepare",
        "url": target.url,
        "format": target.format,
        "batch": batch,
        "start": start,
        "count": count,
        "concurrency": run.params.alert_concurrency,
        "rate": rate,
        "max_seconds": seconds,
    }
    ask(gen, command, timeout=120)
    pid = target.server.pid
    cpu0, gen0 = m.cpu_seconds(pid), m.cpu_seconds(gen.pid)
    result = ask(gen, {"op": "go"}, timeout=seconds + 120)
    cpu, gen_cpu = m.cpu_seconds(pid) - cpu0, m.cpu_seconds(gen.pid) - gen0
    sent = result["alerts_sent"]
    result.update(
        start=start,
        cpu_s=cpu,
        cpu_us_per_alert=1e6 * cpu / sent if sent else float("nan"),
        cpu_percent=100 * cpu / result["seconds"],
        generator_cpu_percent=100 * gen_cpu / result["seconds"],
        p50_ms=1000 * result.pop("p50_s"),
        p99_ms=1000 * result.pop("p99_s"),
    )
    return result


def _medians(windows: list[dict[str, Any]]) -> dict[str, float]:
    keys = (
        "alerts_per_s",
        "requests_per_s",
        "p50_ms",
        "p99_ms",
        "cpu_us_per_alert",
        "cpu_percent",
        "generator_cpu_percent",
    )
    return {k: m.median(w[k] for w in windows) for k in keys}


def measure(
    run: Run, target: Target, gen: Proc, batch: int, matching: bool = True
) -> dict[str, Any]:
    """`matching`: the daemon's rules match BenchAlert0 and 1 (else nothing matches)."""
    p = run.params
    sent = 0
    matched_expected = 0
    matched_seen = 0
    errors = 0

    def account(result: dict[str, Any]) -> dict[str, Any]:
        nonlocal sent, matched_expected, matched_seen, errors
        sent += result["alerts_sent"]
        errors += result["errors"]
        matched_seen += result["matched"]
        matched_expected += expected_matches(result["start"], result["alerts_sent"], matching)
        return result

    def cap(rate: float) -> int:
        """How many alerts to prepare for a window: three times the rate seen so far."""
        count = max(200 * batch, int(3 * rate * p.alert_window))
        return count - count % batch

    # Warm-up: connections, imports, caches, on fingerprints of its own.
    warm = account(
        _post(run, gen, target, batch=batch, start=WARMUP_BASE, count=WARMUP_CAP, seconds=0.3)
    )
    rate = max(warm["alerts_per_s"], 1.0)
    offset = 0
    new = []
    for _ in range(p.windows):
        result = account(
            _post(
                run, gen, target, batch=batch, start=offset, count=cap(rate), seconds=p.alert_window
            )
        )
        rate = max(result["alerts_per_s"], rate)
        offset += result["alerts_sent"]
        new.append(result)
    dedup = [
        account(
            _post(
                run,
                gen,
                target,
                batch=batch,
                start=w["start"],
                count=w["alerts_sent"],
                seconds=p.alert_window * 20,
            )
        )
        for w in new
    ]
    peak_requests = m.median(w["requests_per_s"] for w in new)
    paced_rate = 0.8 * peak_requests
    paced = []
    for _ in range(p.windows):
        count = int(paced_rate * p.alert_window) * batch
        result = account(
            _post(
                run,
                gen,
                target,
                batch=batch,
                start=offset,
                count=count,
                seconds=p.alert_window * 3,
                rate=paced_rate,
            )
        )
        offset += result["alerts_sent"]
        paced.append(result)
    time.sleep(0.2)
    received = target.received()
    return {
        "batch": batch,
        "new": {"windows": new, "median": _medians(new)},
        "dedup": {"windows": dedup, "median": _medians(dedup)},
        "paced": {"rate_requests_per_s": paced_rate, "windows": paced, "median": _medians(paced)},
        "alerts_sent": sent,
        "alerts_received": received,
        "errors": errors,
        "lost": sent - received,
        "matched_expected": matched_expected if target.format == "runbookd" else None,
        "matched_answered": matched_seen if target.format == "runbookd" else None,
        "rss_mb_after": m.rss_bytes(target.server.pid) / 1e6,
    }


def scenario(run: Run) -> dict[str, Any]:
    gen = start_worker(run.procs, "alertgen", "alertgen")
    out: dict[str, Any] = {}
    try:
        for batch in BATCHES:
            variants = [("runbookd", intake_rules())]
            if run.params.intake_unmatched:
                variants.append(("runbookd_unmatched", unmatched_rules()))
            for key, rules in variants:
                log(f"intake: {key}, {batch} alert(s) per request")
                port = free_port()
                name = f"{key}-intake-{batch}"
                config = runbookd_config(
                    run.tmp / f"state-{name}", port, rules=rules, settings=UNCAPPED
                )
                server = start_runbookd(run.procs, run.tmp, name, config)
                try:
                    out[f"{key}_{batch}"] = measure(
                        run, Target("runbookd", server, "runbookd"), gen, batch, key == "runbookd"
                    )
                finally:
                    run.procs.stop(server.proc)
            log(f"intake: Alertmanager, {batch} alert(s) per request")
            server = start_alertmanager(run.procs, run.tmp, f"alertmanager-{batch}")
            try:
                out[f"alertmanager_{batch}"] = measure(
                    run, Target("alertmanager", server, "alertmanager"), gen, batch
                )
            finally:
                run.procs.stop(server.proc)
    finally:
        run.procs.stop(gen)
    report(run, out)
    return out


def report(run: Run, out: dict[str, Any]) -> None:
    for batch in BATCHES:
        s = f"2 intake ({batch}/request)"
        rb, am = out[f"runbookd_{batch}"], out[f"alertmanager_{batch}"]
        rate, am_rate = rb["new"]["median"]["alerts_per_s"], am["new"]["median"]["alerts_per_s"]
        gen_note = (
            "generator-bound (generator ≥ 90% of a core)"
            if am["new"]["median"]["generator_cpu_percent"] >= 90
            else ""
        )
        run.row(
            s,
            "alerts/s, new fingerprints",
            rate,
            "/s",
            peer=am_rate,
            peer_name="alertmanager",
            ratio=m.ratio(rate, am_rate),
            target=(">=", 1.0, ">= 1.0x"),
            note=gen_note,
        )
        dd, am_dd = rb["dedup"]["median"]["alerts_per_s"], am["dedup"]["median"]["alerts_per_s"]
        run.row(
            s,
            "alerts/s, repeated (dedup)",
            dd,
            "/s",
            peer=am_dd,
            peer_name="alertmanager",
            ratio=m.ratio(dd, am_dd),
        )
        run.row(
            s,
            f"latency p50 at peak (c={run.params.alert_concurrency})",
            rb["new"]["median"]["p50_ms"],
            "ms",
            peer=am["new"]["median"]["p50_ms"],
            peer_name="alertmanager",
        )
        run.row(
            s,
            "latency p99 at 80% of peak",
            rb["paced"]["median"]["p99_ms"],
            "ms",
            peer=am["paced"]["median"]["p99_ms"],
            peer_name="alertmanager",
            target=("<=", 50.0, "<= 50 ms"),
            note=f"{0.8 * rate:.0f} alerts/s offered",
        )
        run.row(
            s,
            "CPU per alert",
            rb["new"]["median"]["cpu_us_per_alert"],
            "µs",
            peer=am["new"]["median"]["cpu_us_per_alert"],
            peer_name="alertmanager",
            ratio=m.ratio(
                rb["new"]["median"]["cpu_us_per_alert"], am["new"]["median"]["cpu_us_per_alert"]
            ),
        )
        run.row(
            s,
            "alerts lost (sent - received)",
            rb["lost"],
            "",
            peer=am["lost"],
            peer_name="alertmanager",
            target=("==", 0.0, "= 0"),
            note=f"{rb['alerts_sent']:.0f} sent, {rb['errors']} errors; matched "
            f"{rb['matched_answered']}/{rb['matched_expected']} expected",
        )
        if f"runbookd_unmatched_{batch}" in out:
            um = out[f"runbookd_unmatched_{batch}"]["new"]["median"]
            run.row(
                s,
                "alerts/s, new, no rule matching (intake path alone)",
                um["alerts_per_s"],
                "/s",
                peer=am_rate,
                peer_name="alertmanager",
                ratio=m.ratio(um["alerts_per_s"], am_rate),
                note=f"{um['cpu_us_per_alert']:.0f} µs CPU per alert",
            )
        run.row(
            s,
            "RSS after",
            rb["rss_mb_after"],
            "MB",
            peer=am["rss_mb_after"],
            peer_name="alertmanager",
        )
