"""The rules fed by check observations (threshold and baseline conditions).

Each rule's state machine (`RuleEvaluator`) decides when it fires and resolves; this part
routes each observation to the rules of its check, opens and resolves their incidents on the
transitions, holds a rule whose check stopped delivering (stale data), and raises a
"monitoring blind" incident (`RULE:blind`) for a rule blind longer than its `blind_after`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import structlog

from daemon.core.models import Incident, Observation, RuleState
from daemon.core.values import shown
from daemon.engine.incidents import Actions, OpenIncidents
from daemon.rules.config import RuleConfig
from daemon.rules.machine import RuleEvaluator, Transition
from daemon.runtime.metrics import Metrics

log = structlog.get_logger("runbookd.engine")


class ThresholdRules:
    def __init__(self, incidents: OpenIncidents, *, actions: Actions, metrics: Metrics) -> None:
        self.incidents = incidents
        self.actions = actions
        self.metrics = metrics
        self.evaluators: dict[str, RuleEvaluator] = {}
        self.staleness: dict[str, float] = {}
        self._by_check: dict[str, list[RuleEvaluator]] = {}

    def set_rules(self, rules: dict[str, RuleConfig], staleness: dict[str, float]) -> None:
        """Install the observation-fed ones among `rules`; a rule whose config did not change
        keeps its state (reload), a changed one still firing carries on firing."""
        kept: dict[str, RuleEvaluator] = {}
        for name, config in rules.items():
            if config.alert_match is not None:
                continue
            old = self.evaluators.get(name)
            if old is not None and old.config == config:
                kept[name] = old
                continue
            kept[name] = evaluator = RuleEvaluator(name, config)
            if (incident := self.incidents.by_rule.get(name)) is not None:
                evaluator.restore_firing(incident.trigger.get("baseline"))
            self.metrics.rule_state.labels(name).set(int(evaluator.state))
        for name in self.evaluators.keys() - rules.keys():
            self.metrics.rule_state.remove(name)
        self.evaluators = kept
        self.staleness = staleness
        by_check: dict[str, list[RuleEvaluator]] = defaultdict(list)
        for evaluator in kept.values():
            by_check[evaluator.check].append(evaluator)
        self._by_check = dict(by_check)

    def restore(self, incidents: Iterable[Incident]) -> None:
        """The rules of incidents a previous run left open carry on firing."""
        for incident in incidents:
            if (evaluator := self.evaluators.get(incident.rule)) is not None:
                evaluator.restore_firing(incident.trigger.get("baseline"))
                self.metrics.rule_state.labels(incident.rule).set(int(RuleState.FIRING))

    def reset(self, rule: str) -> None:
        """An operator resolved the rule's incident: it starts afresh."""
        if (evaluator := self.evaluators.get(rule)) is not None:
            evaluator.reset()

    async def observe(self, obs: Observation) -> None:
        for evaluator in self._by_check.get(obs.check, ()):
            was_blind = evaluator.blind
            transition = evaluator.observe(obs)
            if evaluator.blind != was_blind:
                self._blind_changed(evaluator)
            if evaluator.blind != was_blind and not evaluator.blind:
                await self._blind_incident(evaluator, obs.ts)
            if transition is not None:
                await self._on_transition(evaluator, transition)
            elif evaluator.state is RuleState.INACTIVE and not evaluator.blind:
                self.actions.healthy(evaluator.config)

    async def tick(self, now: float) -> None:
        """Hold rules whose check stopped delivering (stale data); raise "monitoring blind"
        incidents for rules blind longer than their `blind_after`."""
        for check, evaluators in self._by_check.items():
            stale_after = self.staleness.get(check)
            for evaluator in evaluators:
                stale = stale_after is not None and not evaluator.blind
                if stale and evaluator.stale(now, stale_after or 0.0):
                    self._blind_changed(evaluator)
                await self._blind_incident(evaluator, now)

    async def _blind_incident(self, evaluator: RuleEvaluator, now: float) -> None:
        config, key = evaluator.config, f"{evaluator.name}:blind"
        since = evaluator.blind_since
        if not config.on_blind:
            return
        if since is None:
            if key in self.incidents.by_rule:
                await self.incidents.resolve(key, now, "resolved: data is back", {})
            return
        if key in self.incidents.by_rule or now - since < config.blind_after:
            return
        reason = evaluator.blind_reason or "no usable data"
        summary = (
            f"monitoring blind: {evaluator.name} has had no usable data for "
            f"{now - since:.0f}s ({reason}); its rule holds its state"
        )
        plan = config.model_copy(
            update={"do": config.on_blind, "escalate": [], "verify_within": None}
        )
        trigger = {"check": evaluator.check, "blind_since": since, "reason": reason}
        await self.incidents.open(key, plan, evaluator.check, summary, summary, trigger, now)

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
        self.metrics.rule_state.labels(t.rule).set(int(evaluator.state))  # resolved: inactive
        log.info(
            "rule state",
            rule=t.rule,
            old=t.old.name.lower(),
            new=t.new.name.lower(),
            value=t.value,
            limit=t.limit,
            condition=t.condition,
        )
        if t.new is RuleState.FIRING and t.rule not in self.incidents.by_rule:
            config = evaluator.config
            # In the unit of the value watched, as the condition says it (`> 5%`: value 19.86%).
            value, unit = shown(t.value, config.condition.value), config.condition.value
            limit = "?" if t.limit is None else shown(t.limit, unit)
            summary = config.summary or f"{t.rule}: {t.condition} (value {value}, limit {limit})"
            message = f"firing: {summary}"
            if config.summary:
                message += f" [{t.condition}: value {value}, limit {limit}]"
            trigger = {
                "check": evaluator.check,
                "value_name": config.condition.value,
                "value": t.value,
                "threshold": t.limit,
                "baseline": t.baseline,
                "condition": t.condition,
                "for_seconds": config.for_,
                "min_samples": config.min_samples,
            }
            await self.incidents.open(
                t.rule, config, evaluator.check, summary, message, trigger, t.ts
            )
        elif t.new is RuleState.RESOLVED:
            data = {"value": t.value, "limit": t.limit, "condition": t.condition}
            value = shown(t.value, evaluator.config.condition.value)
            message = f"resolved: {t.condition} (value {value})"
            await self.incidents.resolve(t.rule, t.ts, message, data)
