"""A rule on pushed alerts and what it remembers: which fingerprints fire (with their episode's
start), the episodes resolved lately, and the sender's groups that left alerts out.

It decides, for one alert, whether it changes anything (a new firing, the end of the episode
firing here, a resolution to record, a change in its group's left-out alerts) and whether it is
a late firing of an episode already resolved. Also here: the store namespaces that keep this
state across a restart, and the stored form of a firing alert.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from daemon.engine.alerts import Alert, Resolutions
from daemon.rules.config import RuleConfig

# Store namespace prefix: "alerts:<rule>" holds that rule's firing alerts by fingerprint, one
# key each, so a new alert is one small write, whatever else is firing.
ALERTS = "alerts"
# Likewise "resolved:<rule>": the episodes resolved lately, by fingerprint (`Resolutions`).
RESOLVED = "resolved"
# And "truncated:<rule>": the sender's groups whose last notification left alerts out, with
# how many, so a restart does not resolve an incident some of whose alerts may still fire.
TRUNCATED = "truncated"

# The truncated groups remembered per rule; a sender with more is assumed to keep truncating
# the ones already here (they hold the incident open), so the memory stays bounded.
MAX_TRUNCATED_GROUPS = 1_000


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

    def group_restorer(self, group: str) -> Callable[[], None]:
        """What puts back what is known of `group` now (undoing a request not committed)."""
        left_out, heard = self.truncated.get(group), self.heard.get(group)

        def restore() -> None:
            self.truncated.pop(group, None)
            self.heard.pop(group, None)
            if left_out is not None:
                self.truncated[group] = left_out
            if heard is not None:
                self.heard[group] = heard

        return restore

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


# Shallow, unlike asdict(): the store serialises the value at once, so nothing is shared.
# Not the notification's group: it belongs to the request, not to the alert.
_ALERT_FIELDS = tuple(f.name for f in fields(Alert) if f.name not in ("group", "truncated"))


def alert_to_json(alert: Alert) -> dict[str, Any]:
    """The stored form of a firing alert (namespace ALERTS)."""
    doc = {name: getattr(alert, name) for name in _ALERT_FIELDS}
    if not alert.clipped:
        del doc["clipped"]
    return doc


def stored_starts_at(stored: Any) -> float | None:
    """The episode start of a stored firing alert (`alert_to_json`)."""
    value = stored.get("starts_at") if isinstance(stored, dict) else None
    return float(value) if isinstance(value, int | float) else None
