"""What every scenario shares: the run's parameters, its processes and temp dir, the nginx
target, and the rows of the results table (figures, ratios and targets)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.peers import Server
from bench.procs import Processes

Mode = Literal["quick", "full"]


@dataclass(frozen=True)
class Params:
    """Sizes and durations of a run. Every figure is the median of `windows` windows."""

    mode: Mode
    checks: int  # scenario 1: http checks at 1 s (and Prometheus targets)
    windows: int
    window: float  # seconds per measured window (polling)
    warmup: float  # seconds after start before the first window
    probe_window: float  # blackbox + wrk, and the saturated floor
    alert_window: float  # scenario 2, per window
    alert_concurrency: int
    trials: int  # scenario 3
    detection_loaded: bool  # scenario 3 also with 1,000 checks/s running
    incidents: int  # scenario 4
    cold_starts: int
    cold_start_checks: int
    bunched_variant: bool  # scenario 1 also with jitter 0.1 (checks bunched in a tenth of it)
    bunched_counted: bool  # ... with the /metrics-bounded windows too (else the target's view only)
    intake_unmatched: bool  # scenario 2 also with rules no alert matches (the bare intake path)
    # Scenario 1 also at these sizes (runbookd, Prometheus and the raw floor at each), and at
    # the largest of them with these `check_processes` besides the default (auto).
    polling_sizes: tuple[int, ...] = ()
    polling_process_variants: tuple[int, ...] = ()

    @classmethod
    def for_mode(cls, mode: Mode) -> Params:
        if mode == "full":
            return cls(
                mode=mode,
                checks=5000,
                windows=3,
                window=10.0,
                warmup=5.0,
                probe_window=5.0,
                alert_window=5.0,
                alert_concurrency=20,
                trials=20,
                detection_loaded=True,
                incidents=10_000,
                cold_starts=5,
                cold_start_checks=1000,
                bunched_variant=True,
                bunched_counted=True,
                intake_unmatched=True,
                polling_sizes=(1000, 20_000),
                polling_process_variants=(0, 2),
            )
        return cls(
            mode=mode,
            checks=1000,
            windows=3,
            window=4.0,
            warmup=2.0,
            probe_window=2.0,
            alert_window=1.0,
            alert_concurrency=20,
            trials=5,
            detection_loaded=False,
            incidents=10_000,
            cold_starts=3,
            cold_start_checks=1000,
            bunched_variant=True,
            bunched_counted=False,
            intake_unmatched=False,
        )


@dataclass
class Row:
    """One line of the results table. `ratio`/`target` are set for the compared figures."""

    scenario: str
    figure: str
    runbookd: float | None
    unit: str
    peer: float | None = None
    peer_name: str = ""
    ratio: float | None = None
    target: str = ""  # e.g. "<= 1.0x", ">= 1.0x", "<= 50 ms", "= 0"
    passed: bool | None = None
    note: str = ""


def judged(value: float | None, op: str, limit: float) -> bool | None:
    if value is None or math.isnan(value):
        return None
    return value <= limit if op == "<=" else value >= limit if op == ">=" else value == limit


@dataclass
class Run:
    params: Params
    procs: Processes
    tmp: Path
    nginx: Server | None = None
    rows: list[Row] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def row(
        self,
        scenario: str,
        figure: str,
        value: float | None,
        unit: str,
        *,
        peer: float | None = None,
        peer_name: str = "",
        ratio: float | None = None,
        target: tuple[str, float, str] | None = None,
        note: str = "",
    ) -> Row:
        """Add a row; `target` = (op, limit, shown), judged on `ratio` if given, else value."""
        passed = None
        shown = ""
        if target is not None:
            op, limit, shown = target
            passed = judged(ratio if ratio is not None else value, op, limit)
        row = Row(scenario, figure, value, unit, peer, peer_name, ratio, shown, passed, note)
        self.rows.append(row)
        return row

    def rows_json(self) -> list[dict[str, Any]]:
        return [_clean(asdict(r)) for r in self.rows]

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _clean(value: Any) -> Any:
    """NaN is not JSON: null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def clean(value: Any) -> Any:
    return _clean(value)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)
