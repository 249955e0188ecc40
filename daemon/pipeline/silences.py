"""Silences and maintenance windows: while one matches an incident, nothing runs for it.

A silence matches on rule, check and labels (an alert's labels, or for a check rule its
`rule`, `check` and `severity`); all given matchers must be equal. It has a required end, so
none is forgotten forever; one that starts later is a maintenance window. Kept in the store.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from daemon.core.models import Incident
from daemon.store.protocol import Store

NAMESPACE, KEY = "silences", "all"
KEEP = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    created_at: float
    rule: str | None = None
    check: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, incident: Incident) -> bool:
        if self.rule is not None and self.rule != incident.rule:
            return False
        if self.check is not None and self.check != incident.check:
            return False
        labels = incident_labels(incident)
        return all(labels.get(k) == v for k, v in self.labels.items())

    def to_json(self, now: float) -> dict[str, Any]:
        return asdict(self) | {"active": self.active(now)}


def incident_labels(incident: Incident) -> dict[str, str]:
    labels = incident.trigger.get("labels")
    base = {"rule": incident.rule, "check": incident.check, "severity": incident.severity}
    return base | (labels if isinstance(labels, dict) else {})


class Silences:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._all: dict[str, Silence] = {}

    async def load(self) -> None:
        stored = await self.store.get_value(NAMESPACE, KEY) or []
        self._all = {s["id"]: Silence(**s) for s in stored}

    def list(self, now: float, *, include_expired: bool = False) -> list[Silence]:
        found = (s for s in self._all.values() if include_expired or s.ends_at > now)
        return sorted(found, key=lambda s: (s.starts_at, s.id))

    def matching(self, incident: Incident, now: float) -> Silence | None:
        return next((s for s in self.list(now) if s.active(now) and s.matches(incident)), None)

    async def add(self, silence: Silence) -> None:
        self._all[silence.id] = silence
        # Silences ended a month ago are history nobody asks for: keep the list small.
        for old in [s.id for s in self._all.values() if s.ends_at < silence.created_at - KEEP]:
            del self._all[old]
        await self._save()

    async def expire(self, silence_id: str, now: float) -> Silence | None:
        """End a silence now; None when it does not exist."""
        silence = self._all.get(silence_id)
        if silence is None:
            return None
        ended = Silence(**(asdict(silence) | {"ends_at": min(silence.ends_at, now)}))
        self._all[silence_id] = ended
        await self._save()
        return ended

    async def _save(self) -> None:
        await self.store.put_value(NAMESPACE, KEY, [asdict(s) for s in self._all.values()])


def new_silence_id() -> str:
    return f"sil-{secrets.token_hex(6)}"
