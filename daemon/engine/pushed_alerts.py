"""The rules on alerts pushed by other systems (Alertmanager, Grafana, generic webhooks).

Decides what one request of alerts changes: a new firing fingerprint opens its rule's incident
or joins it (one timeline entry per request), the end of the last episode firing resolves it,
unless the sender left alerts of the rule's groups out (`truncatedAlerts`): those groups hold it
open until a notification leaves none out or none comes for `truncated_hold`. A fingerprint
already firing changes nothing, and a late firing of an episode already resolved is refused
(counted and logged). New firing alerts are bounded by `AlertCaps`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from prometheus_client import Gauge

from daemon.config.settings import AlertLimits
from daemon.core.clock import Clock
from daemon.core.models import Incident, RuleState, Step
from daemon.core.units import format_duration
from daemon.engine.alert_caps import AlertCaps
from daemon.engine.alert_rule import (
    ALERTS,
    RESOLVED,
    TRUNCATED,
    AlertRule,
    alert_to_json,
    stored_starts_at,
)
from daemon.engine.alerts import Alert, AlertCapReached, Resolutions
from daemon.engine.incidents import OpenIncidents
from daemon.engine.timeline import Recorder
from daemon.rules.config import RuleConfig
from daemon.runtime.metrics import Metrics
from daemon.store.protocol import Store

log = structlog.get_logger("runbookd.engine")

# The alerts of one request joining an incident: how many are named in the timeline entry's
# message, and how many have their details in its data (the rest are counted), so one huge
# request cannot bloat the timeline. The store keeps every alert whatever the count.
JOINED_NAMED = 3
JOINED_DETAILS = 20


class PushedAlerts:
    def __init__(
        self,
        incidents: OpenIncidents,
        *,
        store: Store,
        recorder: Recorder,
        metrics: Metrics,
        clock: Clock,
        limits: Callable[[], AlertLimits],
        notifiers: Callable[[], frozenset[str]],
    ) -> None:
        self.incidents = incidents
        self.store = store
        self.recorder = recorder
        self.metrics = metrics
        self.clock = clock
        self.limits = limits  # read at each use, like the notifiers
        self.alert_rules: dict[str, AlertRule] = {}
        # The alert rules by the alert name they watch: an alert is tried only against the
        # rules of its name, however many rules there are.
        self.by_alert: dict[str, list[str]] = {}
        self.firing_gauges: dict[str, Gauge] = {}  # runbookd_alerts_firing's child per rule
        self.caps = AlertCaps(
            incidents,
            rules=lambda: self.alert_rules,
            clock=clock,
            limits=limits,
            notifiers=notifiers,
        )

    def set_rules(self, rules: dict[str, RuleConfig]) -> None:
        """Install the alert rules among `rules`; one whose config changed keeps its alerts."""
        alert_rules: dict[str, AlertRule] = {}
        # Each rule's firing gauge, looked up once here: labels() takes a lock and checks its
        # arguments, and every request that changes a rule's alerts sets its gauge.
        firing_gauges: dict[str, Gauge] = {}
        for name, config in rules.items():
            if config.alert_match is None:
                continue
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
            firing_gauges[name] = self.metrics.alerts_firing.labels(name)
            firing_gauges[name].set(len(alert_rules[name].firing))
        for name in self.alert_rules.keys() - rules.keys():
            self.metrics.rule_state.remove(name)
        for name in self.alert_rules.keys() - alert_rules.keys():
            self.metrics.alerts_refused.remove(name)
            self.metrics.alerts_over_cap.remove(name)
            self.metrics.alerts_firing.remove(name)
        self.alert_rules, self.firing_gauges = alert_rules, firing_gauges
        by_alert: dict[str, list[str]] = {}
        for name, rule in alert_rules.items():
            assert rule.config.alert_match is not None  # only alert rules are kept above
            by_alert.setdefault(rule.config.alert_match.alert, []).append(name)
        self.by_alert = by_alert

    async def restore(self) -> None:
        """Take back each rule's firing alerts, truncated groups and lately resolved episodes."""
        for name, rule in self.alert_rules.items():
            stored = await self.store.values(f"{ALERTS}:{name}")
            # All of them, even beyond a cap lowered since: each still resolves its incident.
            rule.firing = {fp: stored_starts_at(value) for fp, value in stored.items()}
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

    async def tick(self, now: float) -> None:
        """Resolve alert cap incidents whose rule has room again (an operator may have resolved
        its alerts, or a reload removed it); forget truncated groups silent for
        `truncated_hold`."""
        await self.caps.review(now)
        await self._expire_truncations(now)

    async def forget(self, rule: str) -> None:
        """An operator resolved the rule's incident: its alerts and truncated groups go (the
        operator says so), in the caller's store transaction."""
        if (alert_rule := self.alert_rules.get(rule)) is None:
            return
        firing, alert_rule.firing = alert_rule.firing, {}
        groups, alert_rule.truncated = alert_rule.truncated, {}
        await self.store.put_values(f"{TRUNCATED}:{rule}", dict.fromkeys(groups))
        await self.store.put_values(f"{ALERTS}:{rule}", dict.fromkeys(firing))
        self.metrics.alerts_firing.labels(rule).set(0)

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
        rules, by_alert = self.alert_rules, self.by_alert
        routed = [
            [name for name in by_alert.get(a.name, ()) if rules[name].matches(a)] for a in alerts
        ]
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
            undo: list[Callable[[], object]] = []
            try:
                async with self.recorder.batch():
                    stale, over_cap = await self._apply(alerts, routed, undo)
            except BaseException:
                # Not committed (the sender is answered 5xx): what the request changed in
                # memory goes back, so that its retry is applied and written as a new one.
                for step in reversed(undo):
                    step()
                raise
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

    async def _apply(
        self, alerts: Sequence[Alert], routed: list[list[str]], undo: list[Callable[[], object]]
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
        total = self.caps.firing_total()
        for alert, names in zip(alerts, routed, strict=True):
            for name in names:
                rule = self.alert_rules.get(name)
                if rule is None:  # removed by a reload meanwhile
                    continue
                fp = alert.fingerprint
                left_out = rule.truncated.get(alert.group) if alert.group else None
                if alert.group:
                    undo.append(rule.group_restorer(alert.group))
                if rule.note_truncation(alert, self.clock.now()) and not rule.firing:
                    await self._resolve_rule(name, alert)
                if alert.group and rule.truncated.get(alert.group) != left_out:
                    truncations.setdefault(name, {})[alert.group] = rule.truncated.get(alert.group)
                if rule.late_firing(alert):
                    stale.append((alert, name))
                elif alert.firing and fp not in rule.firing:
                    if not self.caps.has_room(rule, total):
                        over_cap[name] = over_cap.get(name, 0) + 1
                        continue
                    total += 1
                    rule.firing[fp] = alert.starts_at
                    undo.append(functools.partial(rule.firing.pop, fp, None))
                    stored.setdefault(name, {})[fp] = alert_to_json(alert)
                    if (incident := self.incidents.by_rule.get(name)) is not None:
                        joined.setdefault(incident.id, (incident, []))[1].append(alert)
                    else:
                        await self._opens(rule, alert)
                elif not alert.firing:
                    if rule.resolved.news(alert):
                        now = self.clock.now()
                        undo.append(rule.resolved.restorer(fp))
                        resolutions.setdefault(name, {}).update(rule.resolved.record(alert, now))
                    if not rule.ends_episode(alert):
                        continue
                    undo.append(functools.partial(rule.firing.__setitem__, fp, rule.firing[fp]))
                    del rule.firing[fp]
                    total -= 1
                    stored.setdefault(name, {})[fp] = None
                    if rule.firing:
                        continue
                    if (incident := self.incidents.by_rule.get(name)) is not None and (
                        pending := joined.pop(incident.id, None)
                    ):
                        await self._joined(*pending)  # before it is resolved
                    await self._resolve_rule(name, alert)
        for incident, pending_alerts in joined.values():
            await self._joined(incident, pending_alerts)
        for name, count in over_cap.items():
            self.metrics.alerts_over_cap.labels(name).inc(count)
            await self.caps.reached(name)
        await self.caps.review(self.clock.now())
        # Last, one statement per rule and namespace: the same transaction, so no order to keep.
        for name, values in stored.items():
            await self.store.put_values(f"{ALERTS}:{name}", values)
            if (rule := self.alert_rules.get(name)) is not None:
                self.firing_gauges[name].set(len(rule.firing))
        for name, values in resolutions.items():
            await self.store.put_values(f"{RESOLVED}:{name}", values)
        for name, values in truncations.items():
            await self.store.put_values(f"{TRUNCATED}:{name}", values)
        return stale, sum(over_cap.values())

    async def _resolve_rule(self, name: str, alert: Alert) -> None:
        """The rule's last firing alert resolved: its incident resolves, unless the sender
        left alerts of the rule's groups out of its notifications (`truncatedAlerts`): they
        may still fire. Then the timeline says so, and a notification of that group with
        none left out resolves it."""
        rule, incident = self.alert_rules[name], self.incidents.by_rule.get(name)
        if rule.truncated:
            if incident is not None:
                left_out = sum(rule.truncated.values())
                hold = format_duration(self.limits().truncated_hold)
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
        await self.incidents.resolve(name, self.clock.now(), summary, {"alert": alert.name})

    async def _expire_truncations(self, now: float) -> None:
        """Forget the truncated groups not heard of for `truncated_hold`: a sender repeats a
        group while any alert of it fires, so its silence means the left-out alerts are over
        (Alertmanager sends a resolved group's last notification truncated, then nothing)."""
        hold = self.limits().truncated_hold
        for name, rule in list(self.alert_rules.items()):
            expired = rule.expire(now, hold)
            if not expired:
                continue
            async with self.recorder.batch():
                await self.store.put_values(f"{TRUNCATED}:{name}", dict.fromkeys(expired))
                if rule.truncated or rule.firing or name not in self.incidents.by_rule:
                    continue
                self.metrics.rule_state.labels(name).set(int(RuleState.INACTIVE))
                summary = (
                    f"resolved: no notification of its truncated groups for "
                    f"{format_duration(hold)} (truncated_hold), and none of its alerts fires"
                )
                data = {"truncated_groups": len(expired)}
                await self.incidents.resolve(name, now, summary, data)

    async def _opens(self, rule: AlertRule, alert: Alert) -> None:
        self.metrics.rule_state.labels(rule.name).set(int(RuleState.FIRING))
        summary = rule.config.summary or f"{rule.name}: {alert.summary()}"
        message = f"firing: {summary} [alert {alert.name} from {alert.source}]"
        details = alert_details(alert)
        now = self.clock.now()
        await self.incidents.open(rule.name, rule.config, "", summary, message, details, now)

    async def _joined(self, incident: Incident, alerts: list[Alert]) -> None:
        """One timeline entry for the alerts of a request joining an open incident. A single
        alert's details are the entry's data, as in the opening entry; several are listed
        under `alerts`, the first JOINED_DETAILS of them, with `count` and `more` (left out)."""
        if len(alerts) == 1:
            (alert,) = alerts
            message = f"alert joined: {alert.summary()}"
            await self.recorder.record(incident, Step.ALERT, message, **alert_details(alert))
            return
        named = "; ".join(a.summary() for a in alerts[:JOINED_NAMED])
        unnamed = len(alerts) - JOINED_NAMED
        message = f"{len(alerts)} alerts joined: {named}" + (
            f" and {unnamed} more" if unnamed > 0 else ""
        )
        shown = [alert_details(a) for a in alerts[:JOINED_DETAILS]]
        await self.recorder.record(
            incident,
            Step.ALERT,
            message,
            count=len(alerts),
            alerts=shown,
            more=len(alerts) - len(shown),
        )


def alert_details(alert: Alert) -> dict[str, Any]:
    """An alert as its incident's timeline shows it."""
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
