"""`system` check: CPU, memory, swap, load, disks and named processes of this host (psutil).

It measures and leaves judgement to the rules: the status is OK whenever psutil answered.
psutil reads /proc and calls statfs, which can block (a hung NFS mount), so the measuring
runs in a worker thread; a run that finds the previous one still stuck there says so
instead of piling up threads. psutil is imported there, on first use, not with the module.
"""

from __future__ import annotations

import asyncio
import builtins
import re
import threading
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from checks.base import CHECKS, CheckConfig, CheckContext, CheckResult, Stateless
from daemon.core.models import Status

if TYPE_CHECKING:
    import psutil

HOST_VALUES = frozenset(
    {
        "cpu_percent",
        "memory_percent",
        "swap_percent",
        "load_per_core_1",
        "load_per_core_5",
        "load_per_core_15",
    }
)


def disk_key(path: str) -> str:
    """The value-name suffix of a mount path: "/" -> "root", "/var/lib/pg" -> "var_lib_pg"."""
    return re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_") or "root"


def _absolute(path: str) -> str:
    if not PurePosixPath(path).is_absolute():
        raise ValueError(f"not an absolute path: {path!r}")
    return path


DiskPath = Annotated[str, AfterValidator(_absolute)]
ProcessKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]+$", max_length=40)]
Pattern = Annotated[str, StringConstraints(min_length=1)]


class SystemCheckConfig(CheckConfig):
    """This host, with psutil: CPU, memory and swap in percent, load per core, and for
    each disk its used percent and free bytes (`disk_used_percent_root` for `/`,
    `..._var_lib_pg` for `/var/lib/pg`), and for each named process its count, CPU percent
    (one core = 100) and resident memory. It measures and leaves judgement to the rules: the
    status is OK whenever psutil answered."""

    example: ClassVar[str] = """
        checks:
          host:
            type: system
            interval: 30s
            disks: [/, /var/lib/postgresql]
            processes: {web: "node server.js"}
        """

    type: Literal["system"]
    disks: tuple[DiskPath, ...] = Field(
        ("/",), description="Mount paths (absolute) whose usage to report."
    )
    processes: dict[ProcessKey, Pattern] = Field(
        default_factory=dict,
        description="Value-name key -> text found in the process name or command line, as "
        "`ps aux | grep` would: `{web: node server.js}` gives `process_count_web`.",
    )

    @model_validator(mode="after")
    def _distinct_disks(self) -> SystemCheckConfig:
        seen: dict[str, str] = {}
        for path in self.disks:
            other = seen.setdefault(disk_key(path), path)
            if other != path:
                raise ValueError(f"disks {other!r} and {path!r} give the same value names")
        return self

    def value_names(self) -> frozenset[str]:
        names = set(HOST_VALUES)
        for key in map(disk_key, self.disks):
            names |= {f"disk_used_percent_{key}", f"disk_free_bytes_{key}"}
        for key in self.processes:
            names |= {f"process_{what}_{key}" for what in ("count", "cpu_percent", "rss_bytes")}
        return frozenset(names)


class CpuSampler:
    """psutil.cpu_percent(interval=None), with a previous sample of its own: psutil keeps a
    single one for the whole process, so two callers would each see half an interval."""

    def __init__(self) -> None:
        self._previous: tuple[float, float] | None = None

    def percent(self) -> float | None:
        """Busy share since the previous call; None on the first call (nothing to compare)."""
        import psutil

        times = psutil.cpu_times()
        # As psutil does: guest time is already counted in user time on Linux.
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        busy = total - times.idle - getattr(times, "iowait", 0.0)
        previous, self._previous = self._previous, (total, busy)
        if previous is None or total <= previous[0]:
            return None
        return min(100.0, max(0.0, 100.0 * (busy - previous[1]) / (total - previous[0])))


class ProcessMatcher:
    """The processes whose name or command line contains a pattern, kept between runs:
    psutil measures a process's CPU since the previous call on the same Process object."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._known: dict[int, psutil.Process] = {}

    def sample(self, table: list[tuple[int, str]]) -> dict[str, float]:
        """count, rss_bytes and cpu_percent (one core = 100; omitted while every match is
        new, as its CPU use so far is not over the interval). A match we may not read
        (AccessDenied) is counted, and leaves both sums out: it never becomes readable, so
        they would stay short of it, or read 0 when it is the only one."""
        import psutil

        known, self._known = self._known, {}
        count, rss, cpu, measured, denied = 0, 0, 0.0, False, False
        for pid in (pid for pid, text in table if self.pattern in text):
            proc = known.get(pid)
            try:
                # is_running() also tells a reused pid from the process we knew.
                fresh = proc is None or not proc.is_running()
                if proc is None or fresh:
                    proc = psutil.Process(pid)
                with proc.oneshot():
                    percent = proc.cpu_percent(interval=None)
                    rss += proc.memory_info().rss
            except psutil.NoSuchProcess:  # ended since the scan
                continue
            except psutil.AccessDenied:  # it exists and matched: count it, measure none
                count, denied = count + 1, True
                continue
            count += 1
            self._known[pid] = proc
            if not fresh:
                cpu, measured = cpu + percent, True
        values = {"count": float(count)}
        if not denied:
            values["rss_bytes"] = float(rss)
            if measured or count == 0:
                values["cpu_percent"] = cpu
        return values


def _process_table() -> list[tuple[int, str]]:
    """(pid, "name command line") of every process we may see."""
    import psutil

    table = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        name = proc.info["name"] or ""
        cmdline = " ".join(proc.info["cmdline"] or ())
        table.append((proc.pid, f"{name} {cmdline}"))
    return table


def _disk_problem(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "not found"
    return (exc.strerror or type(exc).__name__).lower()


@CHECKS.register
class SystemCheck(Stateless):
    type: ClassVar[str] = "system"
    Config: ClassVar[builtins.type[CheckConfig]] = SystemCheckConfig

    def __init__(self, name: str, config: SystemCheckConfig) -> None:
        self.name = name
        self.config = config
        self._disks = tuple((path, disk_key(path)) for path in config.disks)
        self._cpu = CpuSampler()
        self._processes = {key: ProcessMatcher(text) for key, text in config.processes.items()}
        # Held from the start of a measurement until its thread finishes, even if the run
        # was cancelled meanwhile: the samplers' state is not for two threads at once.
        self._measuring = threading.Lock()

    async def run(self, ctx: CheckContext) -> CheckResult:
        if not self._measuring.acquire(blocking=False):
            return CheckResult.unknown("previous measurement still running (a hung mount?)")
        return await asyncio.to_thread(self._measure_and_release)

    def _measure_and_release(self) -> CheckResult:
        try:
            return self._measure()
        finally:
            self._measuring.release()

    def _measure(self) -> CheckResult:
        import psutil

        notes: list[str] = []
        try:
            values = self._host_values()
            first = values.get("cpu_percent") is None
            if first:
                notes.append("cpu_percent needs a previous run")
            table = _process_table() if self._processes else []
            for key, matcher in self._processes.items():
                for what, value in matcher.sample(table).items():
                    values[f"process_{what}_{key}"] = value
        except (psutil.Error, OSError) as exc:
            return CheckResult.unknown(f"psutil failed: {exc}")
        for path, key in self._disks:
            try:
                usage = psutil.disk_usage(path)
            except OSError as exc:
                notes.append(f"disk {path}: {_disk_problem(exc)}")
                continue
            if usage.total <= 0:  # /proc, a pseudo filesystem: psutil says 0% of nothing
                notes.append(f"disk {path}: reports no size")
                continue
            values[f"disk_used_percent_{key}"] = usage.percent
            values[f"disk_free_bytes_{key}"] = float(usage.free)
        return CheckResult(Status.OK, values, "; ".join(notes), needs_previous=first)

    def _host_values(self) -> dict[str, float]:
        import psutil

        values: dict[str, float] = {"memory_percent": psutil.virtual_memory().percent}
        cpu = self._cpu.percent()
        if cpu is not None:
            values["cpu_percent"] = cpu
        swap = psutil.swap_memory()
        if swap.total > 0:
            values["swap_percent"] = swap.percent
        cores = psutil.cpu_count() or 0
        if cores > 0:
            for minutes, load in zip((1, 5, 15), psutil.getloadavg(), strict=True):
                values[f"load_per_core_{minutes}"] = load / cores
        return values
