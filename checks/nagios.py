"""`nagios` check: run a Nagios-compatible plugin and read its verdict and performance data.

The exit status is the verdict (0 OK, 1 WARN, 2 CRITICAL, 3 UNKNOWN); the first line of
output, before any `|`, is the reason; performance data become values, in base units.
The argv is fixed config, run by daemon.clients.processes: no shell, its own process group.

Performance data follow the plugin guidelines (monitoring-plugins.org, "Performance data"):
    'label'=value[UOM];[warn];[crit];[min];[max]
space separated, on the first line after `|` and on later lines after a second `|`.
The guidelines name the byte units (B, KB, MB, TB) without a factor; we use 1024, as
check_disk (from the same project) did when it reported MB, and KiB etc. mean the same.
"""

from __future__ import annotations

import builtins
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from checks.base import CHECKS, CheckConfig, CheckContext, CheckResult, Stateless
from daemon.clients.processes import (
    ProcessResult,
    check_argv,
    check_env,
    describe_exit,
    run_process,
)
from daemon.clients.timeouts import request_timeout
from daemon.core.models import Status

EXIT_CODE_VALUE = "plugin_exit_code"
_STATUSES = {int(status): status for status in Status}  # the plugin API's exit codes
# Nagios Core reads at most 8 KiB of a plugin's output (MAX_PLUGIN_OUTPUT_LENGTH).
OUTPUT_LIMIT = 8192
MAX_REASON = 200

_UNIT_FACTORS: dict[str, float] = {
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "ns": 1e-9,
    "B": 1.0,
    **{f"{p}B": 1024.0**n for n, p in enumerate("KMGTP", start=1)},
    **{f"{p}iB": 1024.0**n for n, p in enumerate("KMGTP", start=1)},
    "kB": 1024.0,
}
# An item: a quoted label ('' is a quote inside it), or a plain one, then `=` and its data.
# Anything else up to the next blank is junk, skipped.
_ITEM = re.compile(
    r"'(?P<quoted>(?:[^']|'')+)'=(?P<qdata>\S*)"
    r"|(?P<plain>[^\s'=]+)=(?P<data>\S*)"
    r"|\S+"
)
_VALUE = re.compile(r"^(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?P<uom>[A-Za-z%]*)$")
_UNSAFE = re.compile(r"[^a-z0-9_]")

NonEmpty = Annotated[str, Field(min_length=1)]


class NagiosCheckConfig(CheckConfig):
    """Runs a Nagios-compatible plugin (no shell, its own process group): the exit code is
    the status (0 OK, 1 WARN, 2 CRITICAL, 3 UNKNOWN), the first line of output the reason.
    Each performance data item becomes a value named by its label in lower case (characters
    other than a-z, 0-9 and _ as `_`), in base units (seconds, bytes); `plugin_exit_code` is
    the exit code. A plugin that cannot start or times out is UNKNOWN."""

    example: ClassVar[str] = """
        checks:
          disk_root:
            type: nagios
            argv: [/usr/lib/nagios/plugins/check_disk, -w, "20%", -c, "10%", -p, /]
            interval: 1m
        """

    type: Literal["nagios"]
    argv: list[NonEmpty] = Field(
        min_length=1, description="The plugin and its arguments, run as a list (no shell)."
    )
    env: dict[NonEmpty, str] = Field(
        default_factory=dict,
        description="Environment variables for the plugin. Of the daemon's it inherits only "
        "PATH, HOME, USER, LOGNAME, TMPDIR, TZ and the locale, with `LC_NUMERIC=C`; "
        "`RUNBOOKD_*` names are refused.",
    )

    _no_nul = field_validator("argv")(check_argv)
    _env_names = field_validator("env")(check_env)


@dataclass(frozen=True, slots=True)
class PerfDatum:
    """One performance data item. `value` is in base units (seconds, bytes); thresholds are
    kept as written (range syntax, in the plugin's own unit)."""

    label: str
    value: float
    uom: str = ""
    warn: str = ""
    crit: str = ""
    min: str = ""
    max: str = ""

    @property
    def name(self) -> str:
        return value_name(self.label)


def value_name(label: str) -> str:
    """A perfdata label as a value name: [a-z0-9_], never starting with a digit."""
    name = _UNSAFE.sub("_", label.lower())
    return f"_{name}" if name[:1].isdigit() else name


def parse_perfdata(text: str) -> tuple[list[PerfDatum], list[str]]:
    """The items of a perfdata string, and the ones skipped as malformed (as written).

    A value of `U` (the plugin could not determine it) is skipped without complaint.
    """
    items: list[PerfDatum] = []
    bad: list[str] = []
    for match in _ITEM.finditer(text):
        if match["quoted"] is not None:
            label, data = match["quoted"].replace("''", "'"), match["qdata"]
        elif match["plain"] is not None:
            label, data = match["plain"], match["data"]
        else:
            bad.append(match[0])
            continue
        fields = data.split(";")
        if fields[0] == "U":
            continue
        value = _VALUE.match(fields[0])
        if value is None:
            bad.append(match[0])
            continue
        uom = value["uom"]
        number = float(value["number"]) * _UNIT_FACTORS.get(uom, 1.0)
        if not math.isfinite(number):  # beyond a float: no value rather than infinity
            bad.append(match[0])
            continue
        limits = (fields[1:] + [""] * 4)[:4]
        items.append(PerfDatum(label, number, uom, *limits))
    return items, bad


@dataclass(frozen=True, slots=True)
class PluginOutput:
    text: str
    long_text: str
    perfdata: list[PerfDatum]
    malformed: list[str]


def parse_output(output: str) -> PluginOutput:
    """Split plugin output: `text | perfdata` on the first line, then long text, and after a
    second `|` more perfdata to the end."""
    first, _, rest = output.partition("\n")
    text, _, perf = first.partition("|")
    long_text, _, more = rest.partition("|")
    items, bad = parse_perfdata(f"{perf} {more}")
    return PluginOutput(text.strip(), long_text.strip(), items, bad)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@CHECKS.register
class NagiosCheck(Stateless):
    type: ClassVar[str] = "nagios"
    Config: ClassVar[builtins.type[CheckConfig]] = NagiosCheckConfig

    def __init__(self, name: str, config: NagiosCheckConfig) -> None:
        self.name = name
        self.config = config
        self._program = Path(config.argv[0]).name
        # The plugin gets SIGTERM a little before the scheduler gives up on the run, and
        # SIGKILL half-way to that, so a timeout is reported by us, with the plugin's name.
        self._term_after = request_timeout(config.timeout)
        self._kill_grace = (config.timeout - self._term_after) / 2
        # Perfdata numbers are C-locale; a decimal comma would not parse.
        self._env = {"LC_NUMERIC": "C", **config.env}

    async def run(self, ctx: CheckContext) -> CheckResult:
        run = await run_process(
            self.config.argv,
            term_after=self._term_after,
            kill_grace=self._kill_grace,
            env=self._env,
            output_limit=OUTPUT_LIMIT,
        )
        if run.error is not None:
            return CheckResult.unknown(run.error)
        if run.timed_out:
            return CheckResult.unknown(f"{self._program} timed out after {self._term_after:g}s")
        return self._interpret(run)

    def _interpret(self, run: ProcessResult) -> CheckResult:
        stdout, notes = run.stdout, []
        if run.stdout_truncated:
            # The last item may have been cut in two: a wrong number is worse than none.
            stdout = re.sub(r"\S*\Z", "", stdout)
            notes.append(f"output beyond {OUTPUT_LIMIT >> 10} KiB ignored")
        output = parse_output(stdout)
        values: dict[str, float] = {}
        skipped = list(output.malformed)
        for item in output.perfdata:
            if item.name in values:
                skipped.append(f"{item.label} (duplicate)")
            values.setdefault(item.name, item.value)
        if skipped:
            shown = ", ".join(_clip(item, 40) for item in skipped[:3])
            more = f" (+{len(skipped) - 3} more)" if len(skipped) > 3 else ""
            notes.append(f"skipped malformed perfdata: {shown}{more}")
        code = run.exit_code
        text = output.text or _no_output(run.stderr)
        status = Status.UNKNOWN
        if code is not None and code >= 0:
            values[EXIT_CODE_VALUE] = float(code)
        if code in _STATUSES:
            status = _STATUSES[code]
        else:
            text = f"{self._program} {describe_exit(code)}: {text}"
        return CheckResult(status, values, "; ".join([_clip(text, MAX_REASON), *notes]))


def _no_output(stderr: str) -> str:
    # As Nagios itself says when a plugin prints nothing on stdout.
    line = stderr.strip().partition("\n")[0]
    return f"(no output on stdout) stderr: {line}" if line else "(no output)"
