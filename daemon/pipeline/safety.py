"""The bounds around every action: cooldown, budget, run limit, target locks, circuit breaker.

Each answers one question a stage of the envelope (daemon/pipeline/stages.py) asks before a
step runs; none of them acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.store.protocol import Store
from remediations.base import RemediationConfig

CIRCUIT = "circuit"  # store namespace of the breaker's per-rule state


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a step may not run now: `reason` is a bounded metric label, `why` the sentence."""

    reason: str
    why: str


@dataclass(frozen=True, slots=True)
class Budget:
    max_actions: int = 5
    window: float = 3600.0


async def cooldown(
    store: Store, *, rule: str, name: str, config: RemediationConfig, now: float
) -> Hold | None:
    """The remediation ran for this rule less than its cooldown ago."""
    last = await store.last_action(rule, name)
    if last is not None and now - last < config.cooldown:
        ago = now - last
        return Hold(
            "cooldown",
            f"in cooldown for {config.cooldown - ago:.0f}s more "
            f"(last ran {ago:.0f}s ago, cooldown {config.cooldown:g}s)",
        )
    return None


async def run_limit(
    store: Store, *, name: str, config: RemediationConfig, now: float
) -> Hold | None:
    """The remediation ran its `max_runs` within the window (all rules together)."""
    if (limit := config.max_runs) is not None:
        runs = await store.count_actions(now - limit.window, only=name)
        if runs >= limit.count:
            return Hold(
                "run_limit",
                f"run limit reached ({runs} runs in {limit.window:g}s, max {limit.count})",
            )
    return None


async def over_budget(
    store: Store, *, budget: Budget, notifiers: frozenset[str], now: float
) -> Hold | None:
    """The actions of all rules together used up the budget (pages do not count)."""
    used = await store.count_actions(now - budget.window, exclude=notifiers)
    if used >= budget.max_actions:
        return Hold(
            "budget",
            f"action budget exhausted ({used} of {budget.max_actions} actions "
            f"in {budget.window:g}s)",
        )
    return None


class TargetLocks:
    """One plan at a time per target: two rules never roll back and scale one service at once.

    In-process; replicas sharing a PostgreSQL store will need the store to hold the lock.
    """

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    def acquire(self, target: str, owner: str) -> str | None:
        """Take `target` for `owner`; returns the other owner when it is busy."""
        holder = self._owners.setdefault(target, owner)
        return None if holder == owner else holder

    def release(self, owner: str) -> None:
        for target in [t for t, o in self._owners.items() if o == owner]:
            del self._owners[target]


class CircuitBreaker:
    """After `after` plans of a rule in a row that did not help, automation for that rule
    stops (only pages go out) until an operator resets it. Kept in the store."""

    def __init__(self, store: Store, after: int) -> None:
        self.store = store
        self.after = after

    async def state(self, rule: str) -> dict[str, Any]:
        value = await self.store.get_value(CIRCUIT, rule)
        return value if isinstance(value, dict) else {"failures": 0, "open": False}

    async def is_open(self, rule: str) -> bool:
        return bool((await self.state(rule))["open"])

    async def record(self, rule: str, *, helped: bool, now: float) -> bool:
        """Note a plan's result; True when this one opened the circuit."""
        state = await self.state(rule)
        if helped:
            if state["failures"]:
                await self.store.put_value(CIRCUIT, rule, None)
            return False
        failures = int(state["failures"]) + 1
        opens = failures >= self.after and not state["open"]
        state = {"failures": failures, "open": state["open"] or opens}
        if opens:
            state["opened_at"] = now
        await self.store.put_value(CIRCUIT, rule, state)
        return opens

    async def reset(self, rule: str) -> bool:
        """Close the circuit; False if it was not open."""
        was_open = await self.is_open(rule)
        await self.store.put_value(CIRCUIT, rule, None)
        return was_open
