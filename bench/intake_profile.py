"""Alert intake's CPU per alert and where it goes: runbookd alone, under the bench's generator.

    .venv/bin/python -m bench.intake_profile --batch 1 [--repo DIR] [--windows 4] [--sample]

Starts one `runbookd run` (the bench's intake config: rules on BenchAlert0 and 1, caps out of
the way; `--unmatched` for a rule nothing matches) from `--repo` (default: this worktree; any
worktree with a .venv, so old and new code can be alternated with the same generator), warms
it up, then runs `--windows` closed-loop windows of new fingerprints (20 in flight) and prints,
per window, alerts/s and CPU per alert of the daemon's main thread (/proc/PID/task/PID/stat)
and of the whole process (every thread: SQLite's commits run on their own), with `uptime`'s
load. With `--sample`, the main thread's stack is sampled during the windows (bench/sampled.py)
and the breakdown by part of the path is printed (`breakdown`), and the collapsed stacks kept
with `--stacks FILE`. Prints one JSON line at the end, for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import measure as m
from bench.intake import UNCAPPED, WARMUP_BASE, intake_rules, unmatched_rules
from bench.peers import Server, runbookd_config, start_worker, write_runbookd_config
from bench.procs import Processes, free_port, wait_http
from bench.worker import ask

REPO = Path(__file__).resolve().parent.parent
SAMPLER = REPO / "bench" / "sampled.py"
WINDOW_ALERTS = 150_000  # prepared per window: more than a window takes (a multiple of 10)

# Parts of the intake path, tested in order on each frame from the innermost outwards: a
# sample counts for the first part one of its frames matches (exclusive: the parts add up).
# A pattern is a substring of "file:qualified name".
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("json encoding (store rows, timeline, answer)", ("json/encoder.py:",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("logging (structlog)", ("structlog/",)),
    ("store: batch, queue, group commit (main thread)", ("daemon/store/",)),
    ("engine: incidents, timeline", ("daemon/engine/incidents.py", "daemon/engine/timeline.py")),
    ("engine: caps", ("daemon/engine/alert_caps.py",)),
    ("engine: rules, matching", ("daemon/engine/alert_rule.py",)),
    ("validation (pydantic, sent times)", ("pydantic", ":parse_model", ":validate", "_sent_time")),
    ("validation (pydantic, sent times)", ("_integral", "_timestamp", "units.py:parse_time")),
    ("conversion to engine alerts", (":AlertmanagerWebhook.to_alerts", ":WebhookAlert.to_alert")),
    ("conversion to engine alerts", (":clip", ":_within_bounds", ":fingerprint")),
    ("engine: Engine.alerts and the rest", ("daemon/engine/", "daemon/runtime/daemon.py")),
    ("body read, non-finite scan", (":read_body", "web_request.py:BaseRequest.read")),
    ("body read, non-finite scan", ("streams.py", "_finite", "bodies.py:parse_json")),
    ("answer (acts.py, json_response, taken)", ("daemon/api/acts.py", "bodies.py", ":taken")),
    ("handler (intake.py)", ("daemon/api/intake.py",)),
    ("middleware (app.py, auth.py)", ("daemon/api/app.py", "daemon/api/auth.py")),
    ("aiohttp: response and writer", ("web_response.py", "http_writer.py", "abc.py")),
    ("aiohttp: routing", ("web_urldispatcher.py",)),
    ("aiohttp: request objects", ("web_request.py", "helpers.py", "multidict")),
    ("aiohttp: protocol and app", ("aiohttp/",)),
    ("event loop, other", ("",)),
]
IDLE_TOPS = ("asyncio/runners.py:Runner.run", "asyncio/base_events.py:BaseEventLoop.run_forever")


def part(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, patterns in PARTS[:-1]:
            if any(p in frame for p in patterns):
                return name
    return PARTS[-1][0]


def breakdown(collapsed: str) -> dict[str, Any]:
    """Shares of the main thread's busy samples (a Python frame above the loop's run), by part;
    and the top functions by inclusive share."""
    parts: Counter[str] = Counter()  # a part may have several rows of patterns
    inclusive: Counter[str] = Counter()
    busy = idle = 0
    for line in collapsed.splitlines():
        text, _, count = line.rpartition(" ")
        n = int(count)
        stack = text.split(";")
        if any(stack[-1].endswith(top) for top in IDLE_TOPS):
            idle += n
            continue
        busy += n
        parts[part(stack)] += n
        for frame in set(stack):
            inclusive[frame.rsplit("/", 1)[-1]] += n
    share = {k: round(100 * v / busy, 1) for k, v in parts.most_common()} if busy else {}
    top = {k: round(100 * v / busy, 1) for k, v in inclusive.most_common(45)} if busy else {}
    return {"busy_samples": busy, "idle_samples": idle, "parts_pct": share, "inclusive_pct": top}


def thread_cpu(pid: int, tid: int) -> float:
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / m.CLK_TCK


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0, help="per window")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--repo", type=Path, default=REPO, help="the worktree whose daemon runs")
    ap.add_argument("--unmatched", action="store_true", help="a rule no alert matches")
    ap.add_argument(
        "--paced",
        type=float,
        default=0.0,
        help="then as many open-loop windows at this fraction of the closed-loop peak (0.8)",
    )
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--stacks", type=Path, help="keep the collapsed stacks here")
    args = ap.parse_args()
    repo = args.repo.resolve()
    python = repo / ".venv" / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix="intake-profile-") as tmp_name:
        tmp = Path(tmp_name)
        procs = Processes(tmp)
        try:
            result = _run(args, procs, tmp, python, repo)
        finally:
            procs.stop_all()
    print(json.dumps(result))


def _run(
    args: argparse.Namespace, procs: Processes, tmp: Path, python: Path, repo: Path
) -> dict[str, Any]:
    port = free_port()
    rules = unmatched_rules() if args.unmatched else intake_rules()
    config = runbookd_config(tmp / "state", port, rules=rules, settings=UNCAPPED)
    path = write_runbookd_config(tmp, "runbookd", config)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    sample = tmp / "stacks.txt"
    if args.sample:
        env["RUNBOOKD_SAMPLE"] = str(sample)
    argv = [str(python), str(SAMPLER), "run", "--config", str(path)]
    daemon = procs.spawn("runbookd", argv, cwd=repo, env=env)
    server = Server(daemon, port)
    wait_http(f"{server.url}/readyz", daemon, 30)
    gen = start_worker(procs, "alertgen", "alertgen")
    url = f"{server.url}/api/v1/alerts"

    def window(start: int, count: int, seconds: float, rate: float | None = None) -> dict[str, Any]:
        command = {
            "op": "prepare",
            "url": url,
            "format": "runbookd",
            "batch": args.batch,
            "start": start,
            "count": count,
            "concurrency": args.concurrency,
            "rate": rate,
            "max_seconds": seconds,
        }
        ask(gen, command, timeout=120)
        main0, all0 = thread_cpu(daemon.pid, daemon.pid), m.cpu_seconds(daemon.pid)
        gen0 = m.cpu_seconds(gen.pid)
        out = ask(gen, {"op": "go"}, timeout=seconds + 120)
        sent = out["alerts_sent"]
        main_cpu = thread_cpu(daemon.pid, daemon.pid) - main0
        all_cpu = m.cpu_seconds(daemon.pid) - all0
        return {
            "alerts_per_s": round(out["alerts_per_s"]),
            "requests_per_s": round(out["requests_per_s"]),
            "errors": out["errors"],
            "main_us": round(1e6 * main_cpu / sent, 1),
            "process_us": round(1e6 * all_cpu / sent, 1),
            "main_pct": round(100 * main_cpu / out["seconds"]),
            "gen_pct": round(100 * (m.cpu_seconds(gen.pid) - gen0) / out["seconds"]),
            "p99_ms": round(1000 * out["p99_s"], 1),
            "load": load(),
        }

    window(WARMUP_BASE, 20_000 * args.batch, 0.5)
    if args.sample:
        Path(f"{sample}.start").touch()
    windows = []
    offset = 0
    for _ in range(args.windows):
        w = window(offset, WINDOW_ALERTS, args.seconds)
        offset += WINDOW_ALERTS
        windows.append(w)
        print(json.dumps(w), file=sys.stderr)
    paced = []
    if args.paced:
        rate = args.paced * m.median(w["requests_per_s"] for w in windows)
        for _ in range(args.windows):
            count = int(rate * args.seconds) * args.batch
            w = window(offset, count, args.seconds * 3, rate)
            offset += count
            paced.append(w)
            print(json.dumps({"paced": True, **w}), file=sys.stderr)
    result: dict[str, Any] = {
        "repo": str(repo),
        "batch": args.batch,
        "unmatched": args.unmatched,
        "windows": windows,
        "main_us_min": min(w["main_us"] for w in windows),
        "main_us_median": m.median(w["main_us"] for w in windows),
        "process_us_median": m.median(w["process_us"] for w in windows),
        "paced": paced,
    }
    if args.sample:
        Path(f"{sample}.stop").touch()  # after the paced windows too: their GC pauses count
        deadline = time.monotonic() + 10
        while not sample.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        collapsed = sample.read_text()
        if args.stacks:
            args.stacks.write_text(collapsed)
        result["profile"] = breakdown(collapsed)
        result["gc"] = json.loads(Path(f"{sample}.gc.json").read_text())
        print(json.dumps({"gc": result["gc"]}), file=sys.stderr)
        print(json.dumps(result["profile"], indent=1), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
