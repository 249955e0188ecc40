"""The engine: routes observations and pushed alerts to rules, and opens and resolves one
incident per episode.

A facade over its parts, which hold the decisions: `ThresholdRules` (rules fed by check
observations, staleness and "monitoring blind" incidents), `PushedAlerts` (rules on alerts
pushed by other systems, their caps and truncated groups) and `OpenIncidents` (the incident
open for each rule). It decides only what spans them: the order of a restore and of a tick,
and an operator's resolution, which resets whichever rule raised the incident.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from daemon.config.settings import AlertLimits
from daemon.core.clock import Clock
from daemon.core.models import Incident, Observation, RuleState
from daemon.engine.alert_rule import AlertRule
from daemon.engine.alerts import Alert
from daemon.engine.incidents import Actions, OpenIncidents
from daemon.engine.pushed_alerts import PushedAlerts
from daemon.engine.thresholds import ThresholdRules
from daemon.engine.timeline import Recorder
from daemon.pipeline.fence import Fence
from daemon.rules.config import RuleConfig
from daemon.rules.machine import RuleEvaluator
from daemon.runtime.metrics import Metrics
from daemon.store.protocol import Store


class Engine:
    def __init__(
        self,
        rules: dict[str, RuleConfig],
        *,
        staleness: dict[str, float],
        store: Store,
        recorder: Recorder,
        actions: Actions,
        metrics: Metrics,
        clock: Clock,
        limits: AlertLimits | None = None,
        notifiers: Callable[[], frozenset[str]] = frozenset,
        fence: Fence | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.actions = actions
        self.metrics = metrics
        self.clock = clock
        # Both read by the parts at each use, so replacing them here takes effect at once.
        self.limits = limits or AlertLimits()
        # The remediations that only notify (a reload changes them); an `RULE:alert_cap`
        # incident runs those of its rule and nothing else.
        self.notifiers = notifiers
        self.open_incidents = OpenIncidents(
            store=store, recorder=recorder, actions=actions, metrics=metrics, fence=fence
        )
        self.incidents: dict[str, Incident] = self.open_incidents.by_rule  # by rule
        self.thresholds = ThresholdRules(self.open_incidents, actions=actions, metrics=metrics)
        self.pushed = PushedAlerts(
            self.open_incidents,
            store=store,
            recorder=recorder,
            metrics=metrics,
            clock=clock,
            limits=lambda: self.limits,
            notifiers=lambda: self.notifiers(),
        )
        self.set_rules(rules, staleness)

    @property
    def evaluators(self) -> dict[str, RuleEvaluator]:
        return self.thresholds.evaluators

    @property
    def alert_rules(self) -> dict[str, AlertRule]:
        return self.pushed.alert_rules

    @property
    def staleness(self) -> dict[str, float]:
        return self.thresholds.staleness

    def set_rules(self, rules: dict[str, RuleConfig], staleness: dict[str, float]) -> None:
        """Install rules; a rule whose config did not change keeps its state (reload)."""
        self.thresholds.set_rules(rules, staleness)
        self.pushed.set_rules(rules)

    async def restore(self, *, announce: bool = True) -> None:
        """Resume the open incidents of a previous run: their rules carry on firing. With
        `announce`, each incident's timeline says so at once; the daemon says it only once
        it has really started (`announce_restored`), so a start that fails writes nothing."""
        await self.pushed.restore()
        self.thresholds.restore(await self.open_incidents.restore())
        if announce:
            await self.announce_restored()

    async def announce_restored(self) -> None:
        await self.open_incidents.announce_restored()

    async def observe(self, obs: Observation) -> None:
        await self.thresholds.observe(obs)

    async def tick(self, now: float) -> None:
        """Hold rules whose check stopped delivering (stale data); raise "monitoring blind"
        incidents for rules blind longer than their `blind_after`; resolve alert cap incidents
        whose rule has room again (an operator may have resolved its alerts, or a reload
        removed it); forget truncated groups silent for `truncated_hold`."""
        await self.thresholds.tick(now)
        await self.pushed.tick(now)

    async def alert(self, alert: Alert) -> list[str]:
        """Route one alert; see `alerts`."""
        (matched,) = await self.alerts([alert])
        return matched

    async def alerts(self, alerts: Sequence[Alert]) -> list[list[str]]:
        """Route the alerts of one request to the rules matching them (`PushedAlerts.alerts`);
        returns each alert's rule names. Raises AlertCapReached when some were refused."""
        return await self.pushed.alerts(alerts)

    def firing_total(self) -> int:
        """The firing alerts held, counted once for each rule they match."""
        return self.pushed.caps.firing_total()

    def incident_plans(self) -> dict[str, RuleConfig]:
        """The plans of the open incidents the engine raised itself (`RULE:alert_cap`), by
        their incident's rule: what `Pipeline.recover` resumes after a restart."""
        return self.pushed.caps.plans()

    async def resolve_by_operator(self, incident_id: str, by: str, reason: str) -> bool:
        """An operator closes an incident; its rule starts afresh (it may fire again).

        No resolution is recorded for its alerts: they still fire at their sender, whose next
        repeat opens a new incident (their episode's own resolution is recorded when it comes).
        """
        rule = self.open_incidents.rule_of(incident_id)
        if rule is None:
            return False
        self.thresholds.reset(rule)
        async with self.recorder.batch():
            await self.pushed.forget(rule)
            self.metrics.rule_state.labels(rule).set(int(RuleState.INACTIVE))
            message = f"resolved by {by}: {reason}" if reason else f"resolved by {by}"
            data = {"by": by, "reason": reason}
            await self.open_incidents.resolve(rule, self.clock.now(), message, data, by=by)
        return True
