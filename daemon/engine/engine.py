"""The engine: routes observations to rules, opens and resolves one incident per episode."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import structlog

from daemon.config.settings import AlertLimits
from daemon.core.clock import Clock
from daemon.core.models import Incident, IncidentStatus, Observation, RuleState, Step
from daemon.core.units import format_duration
from daemon.engine.alerts import Alert, AlertCapReached, Resolutions
from daemon.engine.timeline import Recorder
from daemon.rules.config import RuleConfig
from daemon.rules.machine import RuleEvaluator, Transition
from daemon.runtime.metrics import Metrics
from daemon.store.protocol import Store

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
        limits: AlertLimits | None = None,
        notifiers: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.actions = actions
        self.metrics = metrics
        self.clock = clock
        self.staleness = staleness
        self.limits = limits or AlertLimits()
        # The remediations that only notify (read at each use: a reload changes them); an
        # `RULE:alert_cap` incident runs those of its rule and nothing else.
        self.notifiers = notifiers
        self.evaluators: dict[str, RuleEvaluator] = {}
        self.alert_rules: dict[str, AlertRule] = {}
        self.incidents: dict[str, Incident] = {}  # open incident per rule
        self._by_check: dict[str, list[RuleEvaluator]] = {}
        self.set_rules(rules, staleness)

    def set_rules(self, rules: dict[str, RuleConfig], staleness: dict[str, float]) -> None:
        """Install rules; a rule whose config did not change keeps its state (reload)."""
        kept: dict[str, RuleEvaluator] = {}
        alert_rules: dict[str, AlertRule] = {}
        for name, config in rules.items():
            if config.alert_match is not None:
                # At 0 from the start, so increase() sees the first alert refused.
                self.metrics.alerts_refused.labels(name)
                self.metrics.alerts_over_cap.labels(name)
                old_rule = self.alert_rules.get(name)
                if old_rule is None:
                    alert_rules[name] = AlertRule(name, config)
                elif old_rule.config == config:
                    alert_rules[name] = old_rule
                else:
                    firing, resolved = dict(old_rule.firing), old_rule.resolved
                    truncated = old_rule.truncated
                    alert_rules[name] = AlertRule(name, config, firing, resolved, truncated)
                self.metrics.alerts_firing.labels(name).set(len(alert_rules[name].firing))
                continue
            old = self.evaluators.get(name)
            if old is not None and old.config == config:
                kept[name] = old
                continue
            kept[name] = evaluator = RuleEvaluator(name, config)
            if (incident := self.incidents.get(name)) is not None:
                evaluator.restore_firing(incident.trigger.get("baseline"))
            self.metrics.rule_state.labels(name).set(int(evaluator.state))
        for name in (self.evaluators.keys() | self.alert_rules.keys()) - rules.keys():
            self.metrics.rule_state.remove(name)
        for name in self.alert_rules.keys() - alert_rules.keys():
            self.metrics.alerts_refused.remove(name)
            self.metrics.alerts_over_cap.remove(name)
            self.metrics.alerts_firing.remove(name)
        self.evaluators = kept
        self.alert_rules = alert_rules
        self.staleness = staleness
        by_check: dict[str, list[RuleEvaluator]] = defaultdict(list)
        for evaluator in kept.values():
            by_check[evaluator.check].append(evaluator)
        self._by_check = dict(by_check)

    async def restore(self, *, announce: bool = True) -> None:
        """Resume the open incidents of a previous run: their rules carry on firing. With
        `announce`, each incident's timeline says so at once; the daemon says it only once
        it has really started (`announce_restored`), so a start that fails writes nothing."""
        for name, rule in self.alert_rules.items():
            stored = await self.store.values(f"{ALERTS}:{name}")
            # All of them, even beyond a cap lowered since: each still resolves its incident.
            rule.firing = {fp: _starts_at(value) for fp, value in stored.items()}
            self.metrics.alerts_firing.labels(name).set(len(rule.firing))
            if rule.firing:
                self.metrics.rule_state.labels(name).set(int(RuleState.FIRING))
            truncated = await self.store.values(f"{TRUNCATED}:{name}")
            rule.truncated = {g: n for g, n in truncated.items() if isinstance(n, int)}
            # Heard now: the hold counts from this start (longer, never shorter).
            rule.heard = dict.fromkeys(rule.truncated, self.clock.now())
            rule.resolved = Resolutions()
            records = await self.store.values(f"{RESOLVED}:{name}")
            if dropped := rule.resolved.restore(records, self.clock.now()):
                await self.store.put_values(f"{RESOLVED}:{name}", dict.fromkeys(dropped))
        for incident in await self.store.open_incidents():
            self.incidents[incident.rule] = incident
            if (evaluator := self.evaluators.get(incident.rule)) is not None:
                evaluator.restore_firing(incident.trigger.get("baseline"))
                self.metrics.rule_state.labels(incident.rule).set(int(RuleState.FIRING))
        self.metrics.incidents_open.set(len(self.incidents))
        if announce:
            await self.announce_restored()

    async def announce_restored(self) -> None:
        for incident in list(self.incidents.values()):
            await self.recorder.record(
                incident, Step.RESTORED, "daemon restarted; incident still open, rule firing"
            )

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
        incidents for rules blind longer than their `blind_after`; resolve alert cap incidents
        whose rule has room again (an operator may have resolved its alerts, or a reload
        removed it); forget truncated groups silent for `truncated_hold`."""
        for check, evaluators in self._by_check.items():
            stale_after = self.staleness.get(check)
            for evaluator in evaluators:
                stale = stale_after is not None and not evaluator.blind
                if stale and evaluator.stale(now, stale_after or 0.0):
                    self._blind_changed(evaluator)
                await self._blind_incident(evaluator, now)
        await self._review_caps(now)
        await self._expire_truncations(now)

    async def _blind_incident(self, evaluator: RuleEvaluator, now: float) -> None:
        config, key = evaluator.config, f"{evaluator.name}:blind"
        since = evaluator.blind_since
        if not config.on_blind:
            return
        if since is None:
            if key in self.incidents:
                await self._resolve(key, now, "resolved: data is back", {})
            return
        if key in self.incidents or now - since < config.blind_after:
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
        await self._open(key, plan, evaluator.check, summary, summary, trigger, now)

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
            config = evaluator.config
            limit = "?" if t.limit is None else f"{t.limit:g}"
            summary = (
                config.summary or f"{t.rule}: {t.condition} (value {t.value:g}, limit {limit})"
            )
            message = f"firing: {summary}"
            if config.summary:
                message += f" [{t.condition}: value {t.value:g}, limit {limit}]"
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
            await self._open(t.rule, config, evaluator.check, summary, message, trigger, t.ts)
        elif t.new is RuleState.RESOLVED:
            data = {"value": t.value, "limit": t.limit, "condition": t.condition}
            await self._resolve(t.rule, t.ts, f"resolved: {t.condition} (value {t.value:g})", data)

    # -- alerts pushed by other systems -------------------------------------------------------

    async def alert(self, alert: Alert) -> list[str]:
        """Route one alert; see `alerts`."""
        (matched,) = await self.alerts([alert])
        return matched

    async def alerts(self, alerts: Sequence[Alert]) -> list[list[str]]:
        """Route the alerts of one request to the rules matching them; returns each alert's
        rule names.

        Idempotent: a fingerprint already firing changes nothing (Alertmanager retries on
        5xx and repeats on its repeat_interval), so it never opens a second incident; nor does
        a late firing of an episode already resolved (`Resolutions`), which is counted and
        logged. What the request changes is written in one store transaction, committed before
        this returns, and the new alerts joining an incident make one timeline entry on it. A
        request that changes nothing touches neither the store nor the incidents' log.

        Bounded (`limits`): a new firing alert beyond its rule's cap or the total is refused,
        counted, and opens the rule's `RULE:alert_cap` incident; the rest of the request is
        applied, then AlertCapReached is raised. Resolutions are never refused.
        """
        rules = self.alert_rules
        routed = [[name for name, rule in rules.items() if rule.matches(a)] for a in alerts]
        over_cap = 0
        now = self.clock.now()
        for a, names in zip(alerts, routed, strict=True):
            for name in names:
                rules[name].hear(a, now)
        if any(
            rules[name].changed_by(a)
            for a, names in zip(alerts, routed, strict=True)
            for name in names
        ):
            async with self.recorder.batch():
                stale, over_cap = await self._apply_alerts(alerts, routed)
        else:  # nothing changes, but late firings are still counted
            stale = [
                (a, name)
                for a, names in zip(alerts, routed, strict=True)
                for name in names
                if rules[name].late_firing(a)
            ]
        self._refused(stale)
        if over_cap:
            raise AlertCapReached(routed, over_cap)
        return routed

    def _refused(self, stale: list[tuple[Alert, str]]) -> None:
        """Count the late firings refused, and log them once per rule and request, at info
        level (for whoever wonders why no incident), naming the first. Never an error to the
        sender: Alertmanager would retry it forever."""
        by_rule: dict[str, list[Alert]] = {}
        for alert, rule in stale:
            self.metrics.alerts_refused.labels(rule).inc()
            by_rule.setdefault(rule, []).append(alert)
        for rule, refused in by_rule.items():
            first = refused[0]
            log.info(
                "late firing alert refused: its episode already resolved",
                rule=rule,
                count=len(refused),
                alert=first.name,
                fingerprint=first.fingerprint,
                starts_at=first.starts_at,
                source=first.source,
            )

    async def _apply_alerts(
        self, alerts: Sequence[Alert], routed: list[list[str]]
    ) -> tuple[list[tuple[Alert, str]], int]:
        # In order, deciding at each step from the state now: other tasks may have moved it
        # while this one waited for the store, and a request may resolve a rule's last alert
        # and fire another after it (a new incident, as when they come one by one).
        joined: dict[str, tuple[Incident, list[Alert]]] = {}  # by incident id, in order
        stored: dict[str, dict[str, Any]] = {}  # the rules' firing alerts to write, or None
        resolutions: dict[str, dict[str, Any]] = {}  # the rules' resolution records, likewise
        truncations: dict[str, dict[str, Any]] = {}  # the rules' truncated groups, likewise
        stale: list[tuple[Alert, str]] = []  # late firings refused, with their rule
        over_cap: dict[str, int] = {}  # new firing alerts refused at a cap, by rule
        # Only this batch changes firing alerts meanwhile (a reload may drop a rule: then this
        # overcounts, which errs on the safe side).
        total = self.firing_total()
        for alert, names in zip(alerts, routed, strict=True):
            for name in names:
                rule = self.alert_rules.get(name)
                if rule is None:  # removed by a reload meanwhile
                    continue
                fp = alert.fingerprint
                left_out = rule.truncated.get(alert.group) if alert.group else None
                if rule.note_truncation(alert, self.clock.now()) and not rule.firing:
                    await self._resolve_alert_rule(name, alert)
                if alert.group and rule.truncated.get(alert.group) != left_out:
                    truncations.setdefault(name, {})[alert.group] = rule.truncated.get(alert.group)
                if rule.late_firing(alert):
                    stale.append((alert, name))
                elif alert.firing and fp not in rule.firing:
                    if not self._has_room(rule, total):
                        over_cap[name] = over_cap.get(name, 0) + 1
                        continue
                    total += 1
                    rule.firing[fp] = alert.starts_at
                    stored.setdefault(name, {})[fp] = _alert_to_json(alert)
                    if (incident := self.incidents.get(name)) is not None:
                        joined.setdefault(incident.id, (incident, []))[1].append(alert)
                    else:
                        await self._alert_opens(rule, alert)
                elif not alert.firing:
                    if rule.resolved.news(alert):
                        now = self.clock.now()
                        resolutions.setdefault(name, {}).update(rule.resolved.record(alert, now))
                    if not rule.ends_episode(alert):
                        continue
                    del rule.firing[fp]
                    total -= 1
                    stored.setdefault(name, {})[fp] = None
                    if rule.firing:
                        continue
                    if (incident := self.incidents.get(name)) is not None and (
                        pending := joined.pop(incident.id, None)
                    ):
                        await self._alerts_joined(*pending)  # before it is resolved
                    await self._resolve_alert_rule(name, alert)
        for incident, pending_alerts in joined.values():
            await self._alerts_joined(incident, pending_alerts)
        for name, count in over_cap.items():
            self.metrics.alerts_over_cap.labels(name).inc(count)
            await self._cap_reached(name)
        await self._review_caps(self.clock.now())
        # Last, one statement per rule and namespace: the same transaction, so no order to keep.
        for name, values in stored.items():
            await self.store.put_values(f"{ALERTS}:{name}", values)
            if (rule := self.alert_rules.get(name)) is not None:
                self.metrics.alerts_firing.labels(name).set(len(rule.firing))
        for name, values in resolutions.items():
            await self.store.put_values(f"{RESOLVED}:{name}", values)
        for name, values in truncations.items():
            await self.store.put_values(f"{TRUNCATED}:{name}", values)
        return stale, sum(over_cap.values())

    async def _resolve_alert_rule(self, name: str, alert: Alert) -> None:
        """The rule's last firing alert resolved: its incident resolves, unless the sender
        left alerts of the rule's groups out of its notifications (`truncatedAlerts`): they
        may still fire. Then the timeline says so, and a notification of that group with
        none left out resolves it."""
        rule, incident = self.alert_rules[name], self.incidents.get(name)
        if rule.truncated:
            if incident is not None:
                left_out = sum(rule.truncated.values())
                hold = format_duration(self.limits.truncated_hold)
                message = (
                    f"not resolved: the sender left {left_out} alerts out of its notifications "
                    f"(truncatedAlerts, in {len(rule.truncated)} groups); they may still fire. "
                    "Resolves once a notification of each such group leaves none out, or none "
                    f"comes for {hold} (truncated_hold)"
                )
                data = {"truncated_alerts": left_out, "groups": len(rule.truncated)}
                await self.recorder.record(incident, Step.ALERT, message, **data)
            return
        self.metrics.rule_state.labels(name).set(int(RuleState.INACTIVE))
        summary = f"resolved: alert {alert.name} ({alert.source})"
        await self._resolve(name, self.clock.now(), summary, {"alert": alert.name})

    async def _expire_truncations(self, now: float) -> None:
        """Forget the truncated groups not heard of for `truncated_hold`: a sender repeats a
        group while any alert of it fires, so its silence means the left-out alerts are over
        (Alertmanager sends a resolved group's last notification truncated, then nothing)."""
        hold = self.limits.truncated_hold
        for name, rule in list(self.alert_rules.items()):
            expired = rule.expire(now, hold)
            if not expired:
                continue
            async with self.recorder.batch():
                await self.store.put_values(f"{TRUNCATED}:{name}", dict.fromkeys(expired))
                if rule.truncated or rule.firing or name not in self.incidents:
                    continue
                self.metrics.rule_state.labels(name).set(int(RuleState.INACTIVE))
                summary = (
                    f"resolved: no notification of its truncated groups for "
                    f"{format_duration(hold)} (truncated_hold), and none of its alerts fires"
                )
                await self._resolve(name, now, summary, {"truncated_groups": len(expired)})

    # -- the caps on firing alerts ----------------------------------------------------------

    def firing_total(self) -> int:
        """The firing alerts held, counted once for each rule they match."""
        return sum(len(rule.firing) for rule in self.alert_rules.values())

    def _has_room(self, rule: AlertRule, total: int) -> bool:
        limits = self.limits
        return len(rule.firing) < limits.max_firing_per_rule and total < limits.max_firing

    def _under_low_water(self, name: str, total: int) -> bool:
        """Back under both caps with a margin (hysteresis): a rule hovering at its cap does not
        open and resolve its `RULE:alert_cap` incident with every alert."""
        rule, limits = self.alert_rules.get(name), self.limits
        return rule is None or (
            len(rule.firing) <= CAP_LOW_WATER * limits.max_firing_per_rule
            and total <= CAP_LOW_WATER * limits.max_firing
        )

    async def _cap_reached(self, name: str) -> None:
        """Open the rule's `RULE:alert_cap` incident, once: new alerts of that rule are being
        refused, so runbookd no longer sees all that fires (like a "monitoring blind" one)."""
        key, rule, limits = f"{name}{CAP_SUFFIX}", self.alert_rules.get(name), self.limits
        if key in self.incidents or rule is None:  # open already, or removed by a reload
            return
        firing, total = len(rule.firing), self.firing_total()
        summary = (
            f"alert cap reached: rule {name} has {firing} alerts firing (cap "
            f"{limits.max_firing_per_rule}), runbookd {total} (cap {limits.max_firing}); new "
            "firing alerts are refused (429) until enough resolve"
        )
        trigger = {
            "firing": firing,
            "max_firing_per_rule": limits.max_firing_per_rule,
            "firing_total": total,
            "max_firing": limits.max_firing,
        }
        log.warning("alert cap reached: refusing new firing alerts", rule=name, **trigger)
        plan = self._cap_plan(rule.config)
        await self._open(key, plan, "", summary, summary, trigger, self.clock.now())

    def _cap_plan(self, config: RuleConfig) -> RuleConfig:
        """An `RULE:alert_cap` incident only notifies: the notifiers among its rule's steps."""
        notifiers = self.notifiers()
        pages = [
            step for step in dict.fromkeys([*config.do, *config.escalate]) if step in notifiers
        ]
        return config.model_copy(update={"do": pages, "escalate": [], "verify_within": None})

    async def _review_caps(self, now: float) -> None:
        """Resolve the `RULE:alert_cap` incidents whose rule is under the low-water mark again
        (or is gone)."""
        capped = [key for key in self.incidents if key.endswith(CAP_SUFFIX)]
        if not capped:
            return
        total = self.firing_total()
        for key in capped:
            name = key.removesuffix(CAP_SUFFIX)
            if self._under_low_water(name, total):
                rule = self.alert_rules.get(name)
                firing = len(rule.firing) if rule is not None else 0
                message = f"resolved: {firing} alerts firing, new ones are accepted again"
                log.info("alert cap: accepting new firing alerts again", rule=name)
                await self._resolve(key, now, message, {"firing": firing, "firing_total": total})

    def incident_plans(self) -> dict[str, RuleConfig]:
        """The plans of the open incidents the engine raised itself (`RULE:alert_cap`), by
        their incident's rule: what `Pipeline.recover` resumes after a restart."""
        return {
            key: self._cap_plan(rule.config)
            for key in self.incidents
            if key.endswith(CAP_SUFFIX)
            and (rule := self.alert_rules.get(key.removesuffix(CAP_SUFFIX))) is not None
        }

    async def _alert_opens(self, rule: AlertRule, alert: Alert) -> None:
        self.metrics.rule_state.labels(rule.name).set(int(RuleState.FIRING))
        summary = rule.config.summary or f"{rule.name}: {alert.summary()}"
        message = f"firing: {summary} [alert {alert.name} from {alert.source}]"
        details = _alert_details(alert)
        await self._open(rule.name, rule.config, "", summary, message, details, self.clock.now())

    async def _alerts_joined(self, incident: Incident, alerts: list[Alert]) -> None:
        """One timeline entry for the alerts of a request joining an open incident. A single
        alert's details are the entry's data, as in the opening entry; several are listed
        under `alerts`, the first JOINED_DETAILS of them, with `count` and `more` (left out)."""
        if len(alerts) == 1:
            (alert,) = alerts
            message = f"alert joined: {alert.summary()}"
            await self.recorder.record(incident, Step.ALERT, message, **_alert_details(alert))
            return
        named = "; ".join(a.summary() for a in alerts[:JOINED_NAMED])
        unnamed = len(alerts) - JOINED_NAMED
        message = f"{len(alerts)} alerts joined: {named}" + (
            f" and {unnamed} more" if unnamed > 0 else ""
        )
        shown = [_alert_details(a) for a in alerts[:JOINED_DETAILS]]
        await self.recorder.record(
            incident,
            Step.ALERT,
            message,
            count=len(alerts),
            alerts=shown,
            more=len(alerts) - len(shown),
        )

    # -- incidents --------------------------------------------------------------------------

    async def resolve_by_operator(self, incident_id: str, by: str, reason: str) -> bool:
        """An operator closes an incident; its rule starts afresh (it may fire again).

        No resolution is recorded for its alerts: they still fire at their sender, whose next
        repeat opens a new incident (their episode's own resolution is recorded when it comes).
        """
        rule = next((r for r, i in self.incidents.items() if i.id == incident_id), None)
        if rule is None:
            return False
        if (evaluator := self.evaluators.get(rule)) is not None:
            evaluator.reset()
        async with self.recorder.batch():
            if (alert_rule := self.alert_rules.get(rule)) is not None:
                firing, alert_rule.firing = alert_rule.firing, {}
                groups, alert_rule.truncated = alert_rule.truncated, {}  # the operator says so
                await self.store.put_values(f"{TRUNCATED}:{rule}", dict.fromkeys(groups))
                await self.store.put_values(f"{ALERTS}:{rule}", dict.fromkeys(firing))
                self.metrics.alerts_firing.labels(rule).set(0)
            self.metrics.rule_state.labels(rule).set(int(RuleState.INACTIVE))
            message = f"resolved by {by}: {reason}" if reason else f"resolved by {by}"
            await self._resolve(rule, self.clock.now(), message, {"by": by, "reason": reason})
        return True

    async def _open(
        self,
        rule: str,
        config: RuleConfig,
        check: str,
        summary: str,
        message: str,
        trigger: dict[str, Any],
        ts: float,
    ) -> None:
        incident = Incident(
            id=new_incident_id(ts),
            rule=rule,
            check=check,
            severity=config.severity,
            summary=summary,
            opened_at=ts,
            trigger=trigger,
        )
        self.incidents[rule] = incident
        self.metrics.incidents_open.set(len(self.incidents))
        self.metrics.incidents_opened.labels(rule).inc()
        await self.recorder.open(incident, message, **trigger)
        self.actions.start(incident, config)

    async def _resolve(self, rule: str, ts: float, message: str, data: dict[str, Any]) -> None:
        incident = self.incidents.pop(rule, None)
        if incident is None:
            return
        incident.status = IncidentStatus.RESOLVED
        incident.resolved_at = ts
        # One transaction: the resolution and the notices it owes (the pages' resolutions,
        # queued in the outbox) survive a crash together, or not at all.
        async with self.recorder.batch():
            await self.store.resolve_incident(incident.id, ts)
            await self.recorder.record(incident, Step.RESOLVED, message, **data)
            await self.actions.resolved(incident)
        self.metrics.incidents_open.set(len(self.incidents))


@dataclass(slots=True)
class AlertRule:
    """A rule on pushed alerts: firing while any matching alert fires."""

    name: str
    config: RuleConfig
    # The fingerprints firing, with their episode's start (None: the sender gave none):
    # strings and floats only, which the cyclic garbage collector does not track, so an alert
    # storm does not lengthen its pauses (the store has the alerts).
    firing: dict[str, float | None] = field(default_factory=dict)
    resolved: Resolutions = field(default_factory=Resolutions)
    # The sender's groups whose last notification left alerts out (`truncatedAlerts`), with
    # how many: while any is here the rule may have alerts firing it cannot see, so its
    # incident does not resolve.
    truncated: dict[str, int] = field(default_factory=dict)
    # When each of those groups was last heard of (memory only: a restart counts from then).
    heard: dict[str, float] = field(default_factory=dict)

    def matches(self, alert: Alert) -> bool:
        match = self.config.alert_match
        return match is not None and match.matches(alert)

    def changed_by(self, alert: Alert) -> bool:
        """A new firing fingerprint (not a late one), the resolution of one that fires, or a
        resolution to record."""
        if alert.group and self.truncated.get(alert.group, 0) != alert.truncated:
            return True
        if alert.fingerprint in self.firing:
            return self.ends_episode(alert)
        return not self.late_firing(alert) if alert.firing else self.resolved.news(alert)

    def note_truncation(self, alert: Alert, now: float) -> bool:
        """Keep what `alert`'s notification says of its group's left-out alerts; True when
        this clears the last group that held the rule's incident open."""
        if not alert.group or self.truncated.get(alert.group, 0) == alert.truncated:
            return False
        if alert.truncated:
            if alert.group in self.truncated or len(self.truncated) < MAX_TRUNCATED_GROUPS:
                self.truncated[alert.group] = alert.truncated
                self.heard.setdefault(alert.group, now)
            return False
        del self.truncated[alert.group]
        self.heard.pop(alert.group, None)
        return not self.truncated

    def hear(self, alert: Alert, now: float) -> None:
        """A notification of one of the truncated groups came: its hold starts again."""
        if alert.group in self.truncated:
            self.heard[alert.group] = now

    def expire(self, now: float, hold: float) -> list[str]:
        """Forget the truncated groups last heard of `hold` ago or more; returns them."""
        expired = [g for g in self.truncated if now - self.heard.get(g, now) >= hold]
        for group in expired:
            del self.truncated[group]
            self.heard.pop(group, None)
        return expired

    def ends_episode(self, alert: Alert) -> bool:
        """A resolution of the episode firing here. One whose start is older than that
        episode's is a late delivery about an earlier episode: it must not end this one."""
        if alert.firing or alert.fingerprint not in self.firing:
            return False
        started = self.firing[alert.fingerprint]
        return started is None or alert.starts_at is None or alert.starts_at >= started

    def late_firing(self, alert: Alert) -> bool:
        """A firing alert, not firing here, of an episode already resolved: refused."""
        return alert.firing and alert.fingerprint not in self.firing and self.resolved.stale(alert)


# The truncated groups remembered per rule; a sender with more is assumed to keep truncating
# the ones already here (they hold the incident open), so the memory stays bounded.
MAX_TRUNCATED_GROUPS = 1_000


# The alerts of one request joining an incident: how many are named in the timeline entry's
# message, and how many have their details in its data (the rest are counted), so one huge
# request cannot bloat the timeline. The store keeps every alert whatever the count.
JOINED_NAMED = 3
JOINED_DETAILS = 20


# The incident a rule's alert cap raises is `<rule>:alert_cap`; it resolves once its rule and
# the total are at most this fraction of their caps.
CAP_SUFFIX = ":alert_cap"
CAP_LOW_WATER = 0.9


# Store namespace prefix: "alerts:<rule>" holds that rule's firing alerts by fingerprint, one
# key each, so a new alert is one small write, whatever else is firing.
ALERTS = "alerts"
# Likewise "resolved:<rule>": the episodes resolved lately, by fingerprint (`Resolutions`).
RESOLVED = "resolved"
# And "truncated:<rule>": the sender's groups whose last notification left alerts out, with
# how many, so a restart does not resolve an incident some of whose alerts may still fire.
TRUNCATED = "truncated"


def _alert_details(alert: Alert) -> dict[str, Any]:
    details = {
        "alert": alert.name,
        "fingerprint": alert.fingerprint,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "generator_url": alert.generator_url,
        "source": alert.source,
    }
    if alert.clipped:  # what was cut to accept it, rather than refuse its whole group
        details["clipped"] = alert.clipped
    return details


# Shallow, unlike asdict(): the store serialises the value at once, so nothing is shared.
# Not the notification's group: it belongs to the request, not to the alert.
_ALERT_FIELDS = tuple(f.name for f in fields(Alert) if f.name not in ("group", "truncated"))


def _starts_at(stored: Any) -> float | None:
    """The episode start of a stored firing alert (`_alert_to_json`)."""
    value = stored.get("starts_at") if isinstance(stored, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _alert_to_json(alert: Alert) -> dict[str, Any]:
    doc = {name: getattr(alert, name) for name in _ALERT_FIELDS}
    if not alert.clipped:
        del doc["clipped"]
    return doc
