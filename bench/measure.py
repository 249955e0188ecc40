"""What the harness reads: CPU and memory from /proc, counters from Prometheus text, and the
statistics it reports (medians of windows, quantiles of latencies and of histograms)."""

from __future__ import annotations

import math
import os
import re
import statistics
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name may hold spaces or parentheses: fields start after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """VmRSS from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def host_load() -> dict[str, object]:
    """The load average (as `uptime` prints it) and the core count, for the results."""
    with open("/proc/loadavg") as f:
        one, five, fifteen = (float(x) for x in f.read().split()[:3])
    try:
        uptime = subprocess.run(
            ["uptime"],  # noqa: S607 - a fixed system command for the record
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except OSError:
        uptime = ""
    return {
        "load1": one,
        "load5": five,
        "load15": fifteen,
        "cpus": os.cpu_count(),
        "uptime": uptime,
    }


# -- Prometheus text format -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def samples(text: str, prefixes: Iterable[str]) -> list[Sample]:
    """The samples whose metric name starts with one of `prefixes` (fast: no full parse)."""
    wanted = tuple(prefixes)
    out = []
    for line in text.splitlines():
        if not line.startswith(wanted):
            continue
        if "{" in line:
            name, _, rest = line.partition("{")
            labels_text, _, value_text = rest.rpartition("}")
            labels = dict(_LABEL.findall(labels_text))
        else:
            name, _, value_text = line.partition(" ")
            labels = {}
        value = value_text.split()[0]
        out.append(Sample(name, labels, float(value)))
    return out


def total(found: Sequence[Sample], name: str, **match: str) -> float:
    """The sum of `name` over every series whose labels include `match`."""
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
    )


def buckets(found: Sequence[Sample], name: str) -> dict[float, float]:
    """Cumulative histogram buckets {le: count}, summed over series."""
    out: dict[float, float] = {}
    for s in found:
        if s.name == f"{name}_bucket":
            le = float(s.labels["le"])
            out[le] = out.get(le, 0.0) + s.value
    return out


def bucket_delta(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    return {le: after[le] - before.get(le, 0.0) for le in after}


def histogram_quantile(q: float, cumulative: Mapping[float, float]) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket; the lowest
    bucket starts at 0; a quantile in the +Inf bucket is the highest finite bound."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return math.nan
    count = cumulative[bounds[-1]]
    rank = q * count
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        c = cumulative[bound]
        if c >= rank:
            if math.isinf(bound):
                return prev_bound
            if c == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (c - prev_count)
        prev_bound, prev_count = bound, c
    return prev_bound


def quantile_bucket(q: float, cumulative: Mapping[float, float]) -> tuple[float, float]:
    """The (lower, upper] bounds of the bucket the q-quantile falls in: how precise it is."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return math.nan, math.nan
    rank = q * cumulative[bounds[-1]]
    lower = 0.0
    for bound in bounds:
        if cumulative[bound] >= rank:
            return lower, bound
        lower = bound
    return lower, math.inf


# -- statistics ------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    data = [v for v in values if not math.isnan(v)]
    return statistics.median(data) if data else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..1) of raw samples."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b
