"""Scenario 3, detection overhead: how long after a fault runbookd's remediation arrives,
beyond what the rule itself asks to wait.

K trials run in one daemon, each with its own check (`t_i`, http, 1 s), rule
(`t_i.up < 1` for 5s) and http remediation, against bench/faulty.py, which flips
/health/i to 503 at a scheduled instant and records when /remediate/i is called. Fault
instants are staggered and carry a random sub-second offset, so the check's phase relative
to the fault varies between trials. All timestamps come from faulty.py's clock.

  overhead     = t_remediation - t_first_failing_check - for
  issue_figure = t_remediation - t_fault - interval - for

t_first_failing_check is when the first check request that got a 503 arrived: the earliest
moment any poller on this schedule could have seen the fault. What remains is runbookd's own
doing: the check's round trip, rule evaluation, incident creation, the pipeline's safety
steps and the remediation request. The issue's figure subtracts a whole interval instead of
the actual phase wait, so it is lower by (interval - phase wait) and may be negative.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from bench import measure as m
from bench.harness import Run, log
from bench.peers import http_checks, runbookd_config, start_python_server, start_runbookd
from bench.procs import BenchError, free_port, http_get, http_post_json, wait_http

INTERVAL = 1.0
FOR = 5.0
STAGGER = 0.6  # seconds between trials' faults (plus a random 0..1 s offset)


def trial_config(url: str, trials: int) -> dict[str, Any]:
    checks = {
        f"t_{i}": {"type": "http", "url": f"{url}/health/{i}", "interval": "1s", "timeout": "900ms"}
        for i in range(trials)
    }
    rules = {
        f"down_{i}": {"when": f"t_{i}.up < 1", "for": "5s", "do": [f"fix_{i}"]}
        for i in range(trials)
    }
    remediations = {
        f"fix_{i}": {
            "type": "http",
            "url": f"{url}/remediate/{i}",
            "body": {"incident": "{{ incident.id }}"},
            "cooldown": "0s",
            "timeout": "2s",
            "retry": {"attempts": 1},
        }
        for i in range(trials)
    }
    return {"checks": checks, "rules": rules, "remediations": remediations}


def run_trials(run: Run, label: str, background_checks: int) -> dict[str, Any]:
    p, nginx = run.params, run.nginx
    assert nginx is not None
    trials = p.trials
    fport = free_port()
    faulty = start_python_server(run.procs, f"faulty-{label}", "faulty", "--port", str(fport))
    furl = f"http://127.0.0.1:{fport}"
    wait_http(f"{furl}/control/ping", faulty, 30)
    parts = trial_config(furl, trials)
    if background_checks:
        parts["checks"].update(http_checks(f"{nginx.url}/health", background_checks))
    port = free_port()
    config = runbookd_config(
        run.tmp / f"state-detect-{label}",
        port,
        settings={"budget": {"max_actions": 10_000, "window": "1h"}},
        **parts,
    )
    log(f"detection: {trials} trials ({label}, {background_checks} background checks)")
    server = start_runbookd(run.procs, run.tmp, f"runbookd-detect-{label}", config)
    try:
        time.sleep(2.0)
        base = time.time() + 1.0
        rng = random.Random(label)  # noqa: S311 - fault offsets, not secrets
        faults = {str(i): base + i * STAGGER + rng.random() for i in range(trials)}
        code, _ = http_post_json(f"{furl}/control/faults", json.dumps({"faults": faults}).encode())
        if code != 200:
            raise BenchError(f"faulty: setting faults: HTTP {code}")
        deadline = max(faults.values()) + INTERVAL + FOR + 5.0
        results: dict[str, Any] = {}
        while time.time() < deadline:
            time.sleep(0.5)
            _, body = http_get(f"{furl}/control/results")
            results = json.loads(body)
            if all(r["remediations"] for r in results.values()):
                break
        cpu = m.cpu_seconds(server.pid)
    finally:
        run.procs.stop(server.proc)
        run.procs.stop(faulty)
    rows = [_trial(int(i), r) for i, r in sorted(results.items(), key=lambda kv: int(kv[0]))]
    done = [r for r in rows if r["overhead_ms"] is not None]
    over = [r["overhead_ms"] for r in done]
    issue = [r["issue_figure_ms"] for r in done]
    return {
        "label": label,
        "background_checks": background_checks,
        "trials": rows,
        "completed": len(done),
        "overhead_p50_ms": m.percentile(over, 0.50),
        "overhead_p99_ms": m.percentile(over, 0.99),
        "overhead_max_ms": max(over) if over else float("nan"),
        "issue_figure_p50_ms": m.percentile(issue, 0.50),
        "issue_figure_p99_ms": m.percentile(issue, 0.99),
        "runbookd_cpu_s": cpu,
    }


def _trial(i: int, r: dict[str, Any]) -> dict[str, Any]:
    fault = r["fault"]
    failing = sorted(t for t, status in r["health"] if status == 503)
    first_fail = min(failing) if failing else None
    remediated = min(r["remediations"]) if r["remediations"] else None
    checks_before = [t for t, status in r["health"] if status == 200 and t < fault]
    out: dict[str, Any] = {
        "trial": i,
        "fault": fault,
        "phase_wait_ms": 1000 * (first_fail - fault) if first_fail else None,
        "failing_checks_before_remediation": (
            sum(1 for t in failing if remediated is None or t <= remediated)
        ),
        "last_ok_check_before_fault_ms": (
            1000 * (fault - max(checks_before)) if checks_before else None
        ),
        "overhead_ms": None,
        "issue_figure_ms": None,
    }
    # The check that should fire the rule is the one `for` after the first failing one. How far
    # its request arrived from exactly `for` later shows whether timing noise made it fall
    # short of `for` (then the rule waits one more interval).
    nth = round(FOR / INTERVAL)
    if len(failing) > nth:
        out["firing_check_gap_minus_for_ms"] = 1000 * (failing[nth] - failing[0] - FOR)
    if first_fail is not None and remediated is not None:
        out["overhead_ms"] = 1000 * (remediated - first_fail - FOR)
        out["issue_figure_ms"] = 1000 * (remediated - fault - INTERVAL - FOR)
        out["fault_to_remediation_s"] = remediated - fault
    return out


def scenario(run: Run) -> dict[str, Any]:
    out = {"idle": run_trials(run, "idle", 0)}
    if run.params.detection_loaded:
        out["loaded"] = run_trials(run, "loaded", 1000)
    report(run, out)
    return out


def report(run: Run, out: dict[str, Any]) -> None:
    for key, result in out.items():
        s = f"3 detection ({key})"
        n = f"{result['completed']}/{len(result['trials'])} trials"
        run.row(
            s,
            "overhead p50 (after first failing check + for)",
            result["overhead_p50_ms"],
            "ms",
            note=n,
        )
        run.row(
            s,
            "overhead p99",
            result["overhead_p99_ms"],
            "ms",
            target=("<=", 100.0, "<= 100 ms"),
            note=f"max {result['overhead_max_ms']:.0f} ms",
        )
        run.row(
            s,
            "issue's figure p99 (t_rem - t_fault - interval - for)",
            result["issue_figure_p99_ms"],
            "ms",
            target=("<=", 100.0, "<= 100 ms"),
            note=f"p50 {result['issue_figure_p50_ms']:.0f} ms",
        )
