"""The contract every check type fulfils, and the shared clients it may use."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import aiohttp

from daemon.clock import Clock
from daemon.models import Status
from daemon.registry import Registry
from daemon.units import Duration, Ratio, SecretsModel


class CheckConfig(SecretsModel):
    """Fields every check has. Subclasses narrow `type` to a Literal (the YAML `type:` key)."""

    type: str
    interval: Duration = 30.0
    # The scheduler cancels a run after this long; the check should give up a little earlier.
    timeout: Duration = 10.0
    # Runs are offset by a stable fraction of `jitter x interval`, so checks don't all fire at
    # once. The default spreads them over the whole interval, as Prometheus spreads its
    # scrapes: a thousand 1 s checks bunched into a tenth of a second start up to 0.3 s late.
    jitter: Ratio = 1.0
    # After this long without an observation the check's values count as UNKNOWN.
    # Default: three intervals.
    stale_after: Duration | None = None

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

    @classmethod
    def unknown(cls, reason: str) -> CheckResult:
        return cls(Status.UNKNOWN, {}, reason)


@dataclass(slots=True)
class CheckContext:
    """Clients opened once at startup and shared by every check."""

    session: aiohttp.ClientSession
    clock: Clock


class Check(Protocol):
    """A check never raises for an expected failure (timeout, refused, auth, bad answer):
    it returns a result whose status and reason say so."""

    type: ClassVar[str]
    Config: ClassVar[builtins.type[CheckConfig]]

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

    async def start(self, ctx: CheckContext) -> None:
        return None

    async def stop(self) -> None:
        return None


CHECKS: Registry[type[Check]] = Registry("check")
