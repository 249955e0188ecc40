"""The contract every check type fulfils, and the shared clients it may use."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import aiohttp
from pydantic import Field, ValidationInfo, field_validator

from daemon.clients.lean_http import LeanHttpClient
from daemon.core.clock import Clock
from daemon.core.models import Status
from daemon.core.registry import Registry
from daemon.core.units import Duration, PositiveDuration, Ratio, SecretsModel, format_duration

# The shortest interval: due runs start on a 10 ms grid, and a check run more often would
# mostly measure the daemon itself.
MIN_INTERVAL = 0.1


class CheckConfig(SecretsModel):
    """Fields every check has. Subclasses narrow `type` to a Literal (the YAML `type:` key)
    and give an `example`: a config text naming one check of the type, which the reference
    shows and tests/unit/test_reference.py loads."""

    example: ClassVar[str] = ""

    type: str = Field(description="The check's type: one of the sections below.")
    interval: Duration = Field(30.0, ge=MIN_INTERVAL, description="How often the check runs.")
    timeout: PositiveDuration = Field(
        10.0,
        description="A run still going after this long is cancelled, and UNKNOWN. It may "
        "exceed `interval`: a run still going when the next is due makes that one skipped "
        "(`runbookd_check_runs_skipped_total`), never run twice at once.",
    )
    # The default spreads runs over the whole interval, as Prometheus spreads its scrapes: a
    # thousand 1 s checks bunched into a tenth of a second start up to 0.3 s late.
    jitter: Ratio = Field(
        1.0,
        description="Runs are offset by a stable fraction of `jitter x interval`, so checks "
        "do not all run at once.",
    )
    # Longer than interval + timeout, or data fresh from the next run would count as stale.
    stale_after: PositiveDuration | None = Field(
        None,
        description="After this long without an observation the check's values count as "
        "UNKNOWN (rules hold). Default: three intervals; must be longer than interval + "
        "timeout.",
    )

    @field_validator("stale_after")
    @classmethod
    def _longer_than_a_run(cls, value: float | None, info: ValidationInfo) -> float | None:
        interval, timeout = info.data.get("interval"), info.data.get("timeout")
        if value is None or interval is None or timeout is None:
            return value  # interval or timeout is invalid: reported already
        if value <= interval + timeout:
            raise ValueError(
                f"must be longer than interval + timeout ({format_duration(interval + timeout)}),"
                f" not {format_duration(value)}: fresh data would count as stale"
            )
        return value

    def value_names(self) -> frozenset[str] | None:
        """The value names this check can report, so the config loader can refuse a rule on a
        value that never exists; None when the config cannot tell in advance."""
        return None

    def staleness(self) -> float:
        return self.stale_after if self.stale_after is not None else 3 * self.interval


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a run measured. The scheduler stamps it with name, time and duration."""

    status: Status
    values: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    # Something is missing only for want of an earlier sample to compare with (a scrape's
    # rates need two scrapes, CPU use two readings): a run moments later can measure it. The
    # daemon's next run is that; `runbookd once` runs such a check a second time.
    needs_previous: bool = False

    @classmethod
    def unknown(cls, reason: str, *, needs_previous: bool = False) -> CheckResult:
        return cls(Status.UNKNOWN, {}, reason, needs_previous)


@dataclass(slots=True)
class CheckContext:
    """Clients opened once at startup and shared by every check. `lean_http` serves the plain
    GETs and HEADs of `http` checks; without it they go through `session` too."""

    session: aiohttp.ClientSession
    clock: Clock
    lean_http: LeanHttpClient | None = None


class Check(Protocol):
    """A check never raises for an expected failure (timeout, refused, auth, bad answer):
    it returns a result whose status and reason say so."""

    type: ClassVar[str]
    Config: ClassVar[builtins.type[CheckConfig]]
    # True when every run ends before the config's timeout by itself (the `http` check's
    # request timeout): the scheduler then sets no second timer around it.
    bounded: ClassVar[bool]

    def __init__(self, name: str, config: Any) -> None: ...

    async def start(self, ctx: CheckContext) -> None:
        """Open what the check keeps between runs (a connection pool). Called once before the
        first run; must not raise for an unreachable service (`run` reports that)."""
        ...

    async def run(self, ctx: CheckContext) -> CheckResult: ...

    async def stop(self) -> None:
        """Close what `start` or `run` opened; called at shutdown and when a reload drops it."""
        ...


class Stateless:
    """For checks that keep nothing open between runs: start and stop do nothing."""

    bounded: ClassVar[bool] = False

    async def start(self, ctx: CheckContext) -> None:
        return None

    async def stop(self) -> None:
        return None


CHECKS: Registry[type[Check]] = Registry("check")
