"""`python -m bench [--full]`: run the scenarios, print the table, write the JSON results.

Quick mode by default (under three minutes); `--full`, `BENCH_MODE=full` or `make bench FULL=1`
for the full sizes. See bench/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from bench import console, detection, footprint, intake, polling
from bench.harness import Mode, Params, Row, Run, clean, log
from bench.measure import host_load
from bench.peers import compile_sources, start_nginx
from bench.procs import Processes
from daemon.runtime import eventloop

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("polling", "intake", "detection", "footprint", "console")


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def git_state() -> dict[str, Any]:
    """Which code was measured: the commit, and the files changed but not committed."""
    root = str(RESULTS.parent.parent)
    commit = _version(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    try:
        status = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.split("\n")
    except OSError:
        status = []
    return {"commit": commit, "uncommitted": [line[3:] for line in status if line.strip()]}


def host_info() -> dict[str, Any]:
    return {
        "git": git_state(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": importlib.metadata.version("aiohttp"),
        "event_loop": eventloop.name(),
        "nginx": _version(["nginx", "-v"]),
        "prometheus": _version(["prometheus", "--version"]),
        "alertmanager": _version(["prometheus-alertmanager", "--version"]),
        "blackbox_exporter": _version(["prometheus-blackbox-exporter", "--version"]),
        "wrk": _version(["wrk", "-v"]),
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if abs(value) >= 100 or float(value).is_integer():
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(rows: list[Row]) -> str:
    header = ("scenario", "figure", "runbookd", "peer", "ratio", "target", "ok", "note")
    lines = [header]
    for r in rows:
        peer = f"{_fmt(r.peer, r.unit)} ({r.peer_name})" if r.peer is not None else "-"
        ok = {True: "yes", False: "NO", None: ""}[r.passed]
        lines.append(
            (
                r.scenario,
                r.figure,
                _fmt(r.runbookd, r.unit),
                peer,
                _fmt(r.ratio, "x"),
                r.target,
                ok,
                r.note,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for n, line in enumerate(lines):
        cells = [c.ljust(w) for c, w in zip(line[:-1], widths, strict=False)]
        out.append("  ".join(cells) + ("  " + line[-1] if line[-1] else ""))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _raise_on_term(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="full sizes (default: quick)")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only these scenarios"
    )
    args = parser.parse_args(argv)
    env_mode = os.environ.get("BENCH_MODE", "quick")
    if env_mode not in ("quick", "full"):
        parser.error(f"BENCH_MODE must be quick or full, not {env_mode!r}")
    mode: Mode = "full" if args.full or env_mode == "full" else "quick"
    only = args.only or list(SCENARIOS)
    params = Params.for_mode(mode)

    # SIGTERM (and a second Ctrl-C) must still run the finally below: every child stopped.
    signal.signal(signal.SIGTERM, _raise_on_term)
    tmp = Path(tempfile.mkdtemp(prefix="runbookd-bench-"))
    procs = Processes(tmp)
    run = Run(params, procs, tmp)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    errors: dict[str, str] = {}
    load_before = host_load()
    log(f"{mode} mode; load average {load_before['load1']:.2f} on {load_before['cpus']} CPUs")
    try:
        compile_sources()
        run.nginx = start_nginx(procs, tmp)
        for name in only:
            try:
                if name == "polling":
                    run.results["polling"] = polling.scenario(run)
                elif name == "intake":
                    run.results["intake"] = intake.scenario(run)
                elif name == "detection":
                    run.results["detection"] = detection.scenario(run)
                elif name == "console":
                    run.results["console"] = console.scenario(run)
                else:
                    run.results["footprint"] = footprint.scenario(run, run.results.get("polling"))
            except Exception as exc:  # one scenario failing should not lose the others
                errors[name] = "".join(traceback.format_exception(exc))
                log(f"{name} failed: {exc}")
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = host_load()
    document = {
        "mode": mode,
        "timestamp": stamp,
        "duration_s": run.elapsed(),
        "params": params.__dict__,
        "host": {**host_info(), "load_before": load_before, "load_after": load_after},
        "rows": run.rows_json(),
        "scenarios": run.results,
        "errors": errors,
    }
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(clean(document), indent=2, default=str)
    # A run of some scenarios only (--only) never replaces latest-<mode>.json.
    name = f"{mode}-{stamp}.json" if args.only is None else f"{mode}-partial-{stamp}.json"
    (RESULTS / name).write_text(text)
    if args.only is None:
        (RESULTS / f"latest-{mode}.json").write_text(text)
    print()
    print(table(run.rows))
    judged = [r for r in run.rows if r.passed is not None]
    met = sum(1 for r in judged if r.passed)
    print(
        f"\n{mode} mode, {run.elapsed():.0f} s; targets met: {met}/{len(judged)}; load average "
        f"{load_before['load1']:.2f} before, {load_after['load1']:.2f} after "
        f"({load_before['cpus']} CPUs)"
    )
    print(f"results: {RESULTS / name}")
    for name, trace in errors.items():
        print(f"\n{name} FAILED:\n{trace}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
