"""Where incidents, timelines and the action ledger live, behind one protocol.

The embedded default is SQLite in the state directory (daemon/store_sqlite.py); a
PostgreSQL implementation joins later for several replicas. Both pass the same tests.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from daemon.models import Incident, IncidentStatus, TimelineEntry


class Pruned(NamedTuple):
    """How many rows `Store.prune` deleted."""

    incidents: int
    actions: int


class Store(Protocol):
    async def open(self) -> None:
        """Create the schema if needed. Called once at startup."""

    async def close(self) -> None: ...

    async def create_incident(self, incident: Incident) -> None:
        """Insert a new incident with its timeline so far; a duplicate id is a ValueError."""

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        """Unknown incident: KeyError."""

    async def resolve_incident(self, incident_id: str, resolved_at: float) -> None:
        """Unknown incident: KeyError. Resolving twice keeps the first time."""

    async def get_incident(self, incident_id: str) -> Incident | None:
        """The incident with its whole timeline, oldest entry first."""

    async def list_incidents(
        self, *, status: IncidentStatus | None = None, rule: str | None = None, limit: int = 100
    ) -> list[Incident]:
        """Newest first (ties by id, descending), without timelines; limit < 0: ValueError."""

    async def open_incidents(self) -> list[Incident]:
        """Every open incident with its timeline, oldest first (what a restart resumes)."""

    async def record_action(self, rule: str, remediation: str, ts: float, outcome: str) -> None:
        """Ledger of executed actions, for cooldowns and the global budget."""

    async def last_action(self, rule: str, remediation: str) -> float | None:
        """When this remediation last ran for this rule (any outcome), or None."""

    async def count_actions(self, since: float, *, exclude: frozenset[str] = frozenset()) -> int:
        """How many actions ran at or after `since`, leaving out the named remediations."""

    async def prune(self, before: float) -> Pruned:
        """Delete incidents resolved before `before` (with their timelines) and ledger
        entries older than it. Open incidents are never pruned."""
