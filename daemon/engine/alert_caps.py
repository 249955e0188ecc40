"""The caps on firing alerts (`runbookd.alerts`): how many a rule and runbookd may hold.

A new firing alert beyond its rule's cap or the total is refused; the rule's `RULE:alert_cap`
incident opens once, since runbookd no longer sees all that fires (like a "monitoring blind"
one), and only notifies. It resolves once the rule and the total are back under a low-water
mark (hysteresis), or the rule is gone. Resolutions are never refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from daemon.config.settings import AlertLimits
from daemon.core.clock import Clock
from daemon.engine.alert_rule import AlertRule
from daemon.engine.incidents import OpenIncidents
from daemon.rules.config import RuleConfig

log = structlog.get_logger("runbookd.engine")

# The incident a rule's alert cap raises is `<rule>:alert_cap`; it resolves once its rule and
# the total are at most this fraction of their caps.
CAP_SUFFIX = ":alert_cap"
CAP_LOW_WATER = 0.9


class AlertCaps:
    def __init__(
        self,
        incidents: OpenIncidents,
        *,
        rules: Callable[[], Mapping[str, AlertRule]],
        clock: Clock,
        limits: Callable[[], AlertLimits],
        notifiers: Callable[[], frozenset[str]],
    ) -> None:
        self.incidents = incidents
        self.clock = clock
        # All read at each use: a reload replaces the rules and the notifiers, and the rules
        # may be replaced while a resolution waits for the store.
        self.rules = rules
        self.limits = limits
        self.notifiers = notifiers

    def firing_total(self) -> int:
        """The firing alerts held, counted once for each rule they match."""
        return sum(len(rule.firing) for rule in self.rules().values())

    def has_room(self, rule: AlertRule, total: int) -> bool:
        limits = self.limits()
        return len(rule.firing) < limits.max_firing_per_rule and total < limits.max_firing

    def _under_low_water(self, name: str, total: int) -> bool:
        """Back under both caps with a margin (hysteresis): a rule hovering at its cap does not
        open and resolve its `RULE:alert_cap` incident with every alert."""
        rule, limits = self.rules().get(name), self.limits()
        return rule is None or (
            len(rule.firing) <= CAP_LOW_WATER * limits.max_firing_per_rule
            and total <= CAP_LOW_WATER * limits.max_firing
        )

    async def reached(self, name: str) -> None:
        """Open the rule's `RULE:alert_cap` incident, once: new alerts of that rule are being
        refused, so runbookd no longer sees all that fires (like a "monitoring blind" one)."""
        key, rule, limits = f"{name}{CAP_SUFFIX}", self.rules().get(name), self.limits()
        if key in self.incidents.by_rule or rule is None:  # open already, or removed by a reload
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
        plan = self._plan(rule.config)
        await self.incidents.open(key, plan, "", summary, summary, trigger, self.clock.now())

    def _plan(self, config: RuleConfig) -> RuleConfig:
        """An `RULE:alert_cap` incident only notifies: the notifiers among its rule's steps."""
        notifiers = self.notifiers()
        pages = [
            step for step in dict.fromkeys([*config.do, *config.escalate]) if step in notifiers
        ]
        return config.model_copy(update={"do": pages, "escalate": [], "verify_within": None})

    async def review(self, now: float) -> None:
        """Resolve the `RULE:alert_cap` incidents whose rule is under the low-water mark again
        (or is gone)."""
        capped = [key for key in self.incidents.by_rule if key.endswith(CAP_SUFFIX)]
        if not capped:
            return
        total = self.firing_total()
        for key in capped:
            name = key.removesuffix(CAP_SUFFIX)
            if self._under_low_water(name, total):
                rule = self.rules().get(name)
                firing = len(rule.firing) if rule is not None else 0
                message = f"resolved: {firing} alerts firing, new ones are accepted again"
                log.info("alert cap: accepting new firing alerts again", rule=name)
                data = {"firing": firing, "firing_total": total}
                await self.incidents.resolve(key, now, message, data)

    def plans(self) -> dict[str, RuleConfig]:
        """The plans of the open `RULE:alert_cap` incidents, by their incident's rule."""
        rules = self.rules()
        return {
            key: self._plan(rule.config)
            for key in self.incidents.by_rule
            if key.endswith(CAP_SUFFIX)
            and (rule := rules.get(key.removesuffix(CAP_SUFFIX))) is not None
        }
