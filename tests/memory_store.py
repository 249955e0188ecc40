"""An in-memory Store for unit tests under a ManualClock (no threads, no I/O).

tests/test_store_memory.py runs the shared store contract against it, so it behaves as the
real stores do.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from daemon.models import Incident, IncidentStatus, TimelineEntry
from daemon.store import Pruned


@dataclass
class MemoryData:
    incidents: dict[str, Incident] = field(default_factory=dict)
    actions: list[tuple[str, str, float, str]] = field(default_factory=list)


class MemoryStore:
    def __init__(self, data: MemoryData | None = None) -> None:
        # Sharing `data` between two stores stands for a restart on the same database.
        self.data = data if data is not None else MemoryData()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def create_incident(self, incident: Incident) -> None:
        if incident.id in self.data.incidents:
            raise ValueError(f"incident {incident.id!r} already exists")
        self.data.incidents[incident.id] = copy.deepcopy(incident)

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        self.data.incidents[incident_id].timeline.append(copy.deepcopy(entry))

    async def resolve_incident(self, incident_id: str, resolved_at: float) -> None:
        incident = self.data.incidents[incident_id]
        if incident.status is IncidentStatus.RESOLVED:
            return
        incident.status = IncidentStatus.RESOLVED
        incident.resolved_at = resolved_at

    async def get_incident(self, incident_id: str) -> Incident | None:
        incident = self.data.incidents.get(incident_id)
        return copy.deepcopy(incident) if incident is not None else None

    async def list_incidents(
        self, *, status: IncidentStatus | None = None, rule: str | None = None, limit: int = 100
    ) -> list[Incident]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        found = [
            i
            for i in self.data.incidents.values()
            if (status is None or i.status is status) and (rule is None or i.rule == rule)
        ]
        found.sort(key=lambda i: (i.opened_at, i.id), reverse=True)
        return [dataclasses.replace(copy.deepcopy(i), timeline=[]) for i in found[:limit]]

    async def open_incidents(self) -> list[Incident]:
        return [
            copy.deepcopy(i)
            for i in sorted(self.data.incidents.values(), key=lambda i: i.opened_at)
            if i.status is IncidentStatus.OPEN
        ]

    async def record_action(self, rule: str, remediation: str, ts: float, outcome: str) -> None:
        self.data.actions.append((rule, remediation, ts, outcome))

    async def last_action(self, rule: str, remediation: str) -> float | None:
        times = [a[2] for a in self.data.actions if a[0] == rule and a[1] == remediation]
        return max(times, default=None)

    async def count_actions(self, since: float, *, exclude: frozenset[str] = frozenset()) -> int:
        return sum(1 for a in self.data.actions if a[2] >= since and a[1] not in exclude)

    async def prune(self, before: float) -> Pruned:
        old = [
            k
            for k, i in self.data.incidents.items()
            if i.resolved_at is not None and i.resolved_at < before
        ]
        for key in old:
            del self.data.incidents[key]
        kept = [a for a in self.data.actions if a[2] >= before]
        pruned = Pruned(len(old), len(self.data.actions) - len(kept))
        self.data.actions = kept
        return pruned
