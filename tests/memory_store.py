"""An in-memory Store for unit tests under a ManualClock (no threads, no I/O).

tests/test_store_memory.py runs the shared store contract against it, so it behaves as the
real stores do.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from daemon.models import Incident, IncidentStatus, TimelineEntry
from daemon.store import ActionRecord, OutboxItem, Pruned

RUNNING = "running"


@dataclass
class OutboxRow:
    item: OutboxItem
    outcome: str | None = None  # None until finished


@dataclass
class MemoryData:
    incidents: dict[str, Incident] = field(default_factory=dict)
    actions: dict[int, ActionRecord] = field(default_factory=dict)
    # Values are kept as JSON text: what comes back is what SQLite would give back.
    values: dict[tuple[str, str], str] = field(default_factory=dict)
    outbox: dict[int, OutboxRow] = field(default_factory=dict)
    # Ids are never reused, even after prune (AUTOINCREMENT in SQLite).
    action_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    outbox_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class MemoryStore:
    def __init__(self, data: MemoryData | None = None) -> None:
        # Sharing `data` between two stores stands for a restart on the same database.
        self.data = data if data is not None else MemoryData()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    # -- incidents ---------------------------------------------------------------------------

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
            for i in sorted(self.data.incidents.values(), key=lambda i: (i.opened_at, i.id))
            if i.status is IncidentStatus.OPEN
        ]

    # -- action ledger -----------------------------------------------------------------------

    async def begin_action(self, incident_id: str, rule: str, remediation: str, ts: float) -> int:
        action_id = next(self.data.action_ids)
        self.data.actions[action_id] = ActionRecord(
            action_id, incident_id, rule, remediation, ts, RUNNING
        )
        return action_id

    async def end_action(self, action_id: int, outcome: str) -> None:
        if outcome == RUNNING:
            raise ValueError(f"action {action_id}: end it with its outcome, not {RUNNING!r}")
        action = self.data.actions[action_id]
        if action.outcome == RUNNING:  # ending twice keeps the first outcome
            self.data.actions[action_id] = dataclasses.replace(action, outcome=outcome)

    async def running_actions(self) -> list[ActionRecord]:
        running = [a for a in self.data.actions.values() if a.outcome == RUNNING]
        return sorted(running, key=lambda a: (a.ts, a.id))

    async def last_action(self, rule: str, remediation: str) -> float | None:
        times = [
            a.ts
            for a in self.data.actions.values()
            if a.rule == rule and a.remediation == remediation
        ]
        return max(times, default=None)

    async def count_actions(
        self, since: float, *, exclude: frozenset[str] = frozenset(), only: str | None = None
    ) -> int:
        return sum(
            1
            for a in self.data.actions.values()
            if a.ts >= since
            and a.remediation not in exclude
            and (only is None or a.remediation == only)
        )

    # -- small JSON values -------------------------------------------------------------------

    async def get_value(self, namespace: str, key: str) -> Any:
        text = self.data.values.get((namespace, key))
        return None if text is None else json.loads(text)

    async def values(self, namespace: str) -> dict[str, Any]:
        return {
            key: json.loads(text)
            for (space, key), text in sorted(self.data.values.items())
            if space == namespace
        }

    async def put_value(self, namespace: str, key: str, value: Any) -> None:
        if value is None:
            self.data.values.pop((namespace, key), None)
        else:
            # A JSON round trip copies, and fails on what SQLite could not store either.
            self.data.values[(namespace, key)] = json.dumps(value)

    # -- paging outbox -----------------------------------------------------------------------

    async def outbox_add(self, incident_id: str, remediation: str, phase: str, ts: float) -> int:
        item_id = next(self.data.outbox_ids)
        item = OutboxItem(item_id, incident_id, remediation, phase, ts, ts, 0, "")
        self.data.outbox[item_id] = OutboxRow(item)
        return item_id

    async def outbox_due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        due = [
            r.item for r in self.data.outbox.values() if r.outcome is None and r.item.next_at <= now
        ]
        return sorted(due, key=lambda i: (i.next_at, i.id))[:limit]

    async def outbox_reschedule(
        self, item_id: int, next_at: float, attempts: int, error: str
    ) -> None:
        row = self.data.outbox[item_id]
        if row.outcome is None:  # a finished item is never due again
            row.item = dataclasses.replace(
                row.item, next_at=next_at, attempts=attempts, last_error=error
            )

    async def outbox_finish(self, item_id: int, outcome: str) -> None:
        row = self.data.outbox[item_id]
        if row.outcome is None:  # finishing twice keeps the first outcome
            row.outcome = outcome

    # -- retention ---------------------------------------------------------------------------

    async def prune(self, before: float) -> Pruned:
        old = [
            k
            for k, i in self.data.incidents.items()
            if i.resolved_at is not None and i.resolved_at < before
        ]
        for key in old:
            del self.data.incidents[key]
        actions = [k for k, a in self.data.actions.items() if a.ts < before]
        for action_id in actions:
            del self.data.actions[action_id]
        for item_id in [
            k
            for k, r in self.data.outbox.items()
            if r.outcome is not None and r.item.created_at < before
        ]:
            del self.data.outbox[item_id]
        return Pruned(len(old), len(actions))
