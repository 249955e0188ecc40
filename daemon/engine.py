"""The engine: routes observations to rules, opens and resolves one incident per episode."""

from __future__ import annotations

import secrets
from collections import defaultdict
from typing import Protocol

import structlog

from daemon.clock import Clock
from daemon.metrics import Metrics
from daemon.models import Incident, IncidentStatus, Observation, RuleState
from daemon.rule_config import RuleConfig
from daemon.rules import RuleEvaluator, Transition
from daemon.store import Store
from daemon.timeline import Recorder

log = structlog.get_logger("runbookd.engine")


class Actions(Protocol):
    """What the engine tells the pipeline (daemon/pipeline.py)."""

    def start(self, incident: Incident, rule: RuleConfig) -> None: ...

    async def resolved(self, incident: Incident) -> None: ...

    def healthy(self, rule: RuleConfig) -> None: ...


def new_incident_id(ts: float) -> str:
    # Time-ordered and unique; doubles as the PagerDuty dedup_key, so it must stay stable.
    return f"inc-{int(ts * 1000):x}-{secrets.token_hex(3)}"


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
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.actions = actions
        self.metrics = metrics
        self.clock = clock
        self.staleness = staleness
        self.evaluators: dict[str, RuleEvaluator] = {}
        self.incidents: dict[str, Incident] = {}  # open incident per rule
        self._by_check: dict[str, list[RuleEvaluator]] = {}
        self.set_rules(rules, staleness)

    def set_rules(self, rules: dict[str, RuleConfig], staleness: dict[str, float]) -> None:
        """Install rules; a rule whose config did not change keeps its state (reload)."""
        kept: dict[str, RuleEvaluator] = {}
        for name, config in rules.items():
            old = self.evaluators.get(name)
            if old is not None and old.config == config:
                kept[name] = old
                continue
            kept[name] = evaluator = RuleEvaluator(name, config)
            if (incident := self.incidents.get(name)) is not None:
                evaluator.restore_firing(incident.trigger.get("baseline"))
            self.metrics.rule_state.labels(name).set(int(evaluator.state))
        for name in self.evaluators.keys() - kept.keys():
            self.metrics.rule_state.remove(name)
        self.evaluators = kept
        self.staleness = staleness
        by_check: dict[str, list[RuleEvaluator]] = defaultdict(list)
        for evaluator in kept.values():
            by_check[evaluator.check].append(evaluator)
        self._by_check = dict(by_check)

    async def restore(self) -> None:
        """Resume the open incidents of a previous run: their rules carry on firing."""
        for incident in await self.store.open_incidents():
            self.incidents[incident.rule] = incident
            if (evaluator := self.evaluators.get(incident.rule)) is not None:
                evaluator.restore_firing(incident.trigger.get("baseline"))
                self.metrics.rule_state.labels(incident.rule).set(int(RuleState.FIRING))
            await self.recorder.record(
                incident, "restored", "daemon restarted; incident still open, rule firing"
            )
        self.metrics.incidents_open.set(len(self.incidents))

    async def observe(self, obs: Observation) -> None:
        for evaluator in self._by_check.get(obs.check, ()):
            was_blind = evaluator.blind
            transition = evaluator.observe(obs)
            if evaluator.blind != was_blind:
                self._blind_changed(evaluator)
            if transition is not None:
                await self._on_transition(evaluator, transition)
            elif evaluator.state is RuleState.INACTIVE and not evaluator.blind:
                self.actions.healthy(evaluator.config)

    def tick(self, now: float) -> None:
        """Hold rules whose check stopped delivering (stale data)."""
        for check, evaluators in self._by_check.items():
            stale_after = self.staleness.get(check)
            if stale_after is None:
                continue
            for evaluator in evaluators:
                if not evaluator.blind and evaluator.stale(now, stale_after):
                    self._blind_changed(evaluator)

    def _blind_changed(self, evaluator: RuleEvaluator) -> None:
        self.metrics.rule_blind.labels(evaluator.name).set(int(evaluator.blind))
        if evaluator.blind and evaluator.last_known_ts is None:
            log.info("rule waiting for data", rule=evaluator.name, reason=evaluator.blind_reason)
        elif evaluator.blind:
            log.warning(
                "rule blind: holding state",
                rule=evaluator.name,
                state=evaluator.state.name,
                reason=evaluator.blind_reason,
            )
        else:
            log.info("rule sees data again", rule=evaluator.name, state=evaluator.state.name)

    async def _on_transition(self, evaluator: RuleEvaluator, t: Transition) -> None:
        self.metrics.rule_state.labels(t.rule).set(int(t.new))
        log.info(
            "rule state",
            rule=t.rule,
            old=t.old.name.lower(),
            new=t.new.name.lower(),
            value=t.value,
            limit=t.limit,
            condition=t.condition,
        )
        if t.new is RuleState.FIRING and t.rule not in self.incidents:
            await self._open(evaluator, t)
        elif t.new is RuleState.RESOLVED and (incident := self.incidents.pop(t.rule, None)):
            incident.status = IncidentStatus.RESOLVED
            incident.resolved_at = t.ts
            await self.store.resolve_incident(incident.id, t.ts)
            await self.recorder.record(
                incident,
                "resolved",
                f"resolved: {t.condition} (value {t.value:g})",
                value=t.value,
                limit=t.limit,
                condition=t.condition,
            )
            self.metrics.incidents_open.set(len(self.incidents))
            await self.actions.resolved(incident)

    async def _open(self, evaluator: RuleEvaluator, t: Transition) -> None:
        config = evaluator.config
        limit = "?" if t.limit is None else f"{t.limit:g}"
        summary = config.summary or f"{t.rule}: {t.condition} (value {t.value:g}, limit {limit})"
        trigger = {
            "check": evaluator.check,
            "value_name": config.when.value,
            "value": t.value,
            "threshold": t.limit,
            "baseline": t.baseline,
            "condition": t.condition,
            "for_seconds": config.for_,
            "min_samples": config.min_samples,
        }
        incident = Incident(
            id=new_incident_id(t.ts),
            rule=t.rule,
            check=evaluator.check,
            severity=config.severity,
            summary=summary,
            opened_at=t.ts,
            trigger=trigger,
        )
        self.incidents[t.rule] = incident
        self.metrics.incidents_open.set(len(self.incidents))
        self.metrics.incidents_opened.labels(t.rule).inc()
        message = f"firing: {summary}"
        if config.summary:
            message += f" [{t.condition}: value {t.value:g}, limit {limit}]"
        await self.recorder.open(incident, message, **trigger)
        self.actions.start(incident, config)
