"""An in-memory Store for unit tests under a ManualClock (no threads, no I/O).

tests/unit/test_store_memory.py runs the shared store contract against it, so it behaves as the
real stores do.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from daemon.core.models import Incident, IncidentStatus, TimelineEntry
from daemon.store.protocol import (
    ActionRecord,
    Claimed,
    Deploy,
    DeployEntry,
    Fenced,
    Forwarded,
    JobRun,
    Lease,
    OutboxItem,
    Pruned,
)

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
    job_runs: dict[int, JobRun] = field(default_factory=dict)
    deploys: dict[str, Deploy] = field(default_factory=dict)
    # (incident id, claim) -> the action that claimed it; gone with its action (prune).
    claims: dict[tuple[str, str], int] = field(default_factory=dict)
    # Ids are never reused, even after prune (AUTOINCREMENT in SQLite).
    action_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    outbox_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    job_run_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # The lease: (holder, epoch, expires_at); it is never part of a batch's working copy.
    lease: list[tuple[str, int, float]] = field(default_factory=list)
    # Procedure runs as JSON text, by id.
    procedure_runs: dict[str, str] = field(default_factory=dict)
    # Requests forwarded to the leader: [request, taken, answer as JSON text]; like the lease,
    # never part of a batch's working copy.
    forwarded: dict[int, list[Any]] = field(default_factory=dict)
    forwarded_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def working_copy(self) -> MemoryData:
        """What a batch writes to; the id counters stay shared, so ids are never reused."""
        return MemoryData(
            copy.deepcopy(self.incidents),
            dict(self.actions),  # ActionRecord and the JSON texts are immutable
            dict(self.values),
            copy.deepcopy(self.outbox),
            dict(self.job_runs),  # JobRun is frozen; its data is replaced, never changed
            copy.deepcopy(self.deploys),
            dict(self.claims),
            self.action_ids,
            self.outbox_ids,
            self.job_run_ids,
            self.lease,
            dict(self.procedure_runs),
            self.forwarded,
            self.forwarded_ids,
        )

    def commit(self, work: MemoryData) -> None:
        self.incidents, self.actions = work.incidents, work.actions
        self.values, self.outbox = work.values, work.outbox
        self.job_runs = work.job_runs
        self.deploys = work.deploys
        self.claims = work.claims
        self.procedure_runs = work.procedure_runs


@dataclass
class Batch:
    owner: asyncio.Task[Any] | None
    work: MemoryData
    done: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStore:
    wall: Callable[[], float] = staticmethod(time.time)  # the lease's clock

    def __init__(self, data: MemoryData | None = None) -> None:
        # Sharing `data` between two stores stands for a restart on the same database.
        self.data = data if data is not None else MemoryData()
        self._batch: Batch | None = None

    async def _data(self) -> MemoryData:
        """What the calling task reads and writes: its batch's working copy, or the committed
        data once no other task's batch is open (as SQLite's lock makes them wait)."""
        while (batch := self._batch) is not None and batch.owner is not asyncio.current_task():
            await batch.done.wait()
        return batch.work if batch is not None else self.data

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        current = asyncio.current_task()
        if self._batch is not None and self._batch.owner is current:
            yield  # joins the enclosing batch
            return
        committed = await self._data()
        batch = self._batch = Batch(current, committed.working_copy())
        try:
            yield
            self.data.commit(batch.work)
        finally:
            self._batch = None
            batch.done.set()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    # -- incidents ---------------------------------------------------------------------------

    async def create_incident(self, incident: Incident) -> None:
        d = await self._data()
        if incident.id in d.incidents:
            raise ValueError(f"incident {incident.id!r} already exists")
        d.incidents[incident.id] = copy.deepcopy(incident)

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        d = await self._data()
        d.incidents[incident_id].timeline.append(copy.deepcopy(entry))

    async def acknowledge_incident(self, incident_id: str, by: str, at: float) -> None:
        d = await self._data()
        incident = d.incidents[incident_id]
        if incident.acknowledged_by is None:
            incident.acknowledged_by, incident.acknowledged_at = by, at

    async def resolve_incident(
        self, incident_id: str, resolved_at: float, *, by: str | None = None
    ) -> None:
        d = await self._data()
        incident = d.incidents[incident_id]
        if incident.status is IncidentStatus.RESOLVED:
            return
        incident.status = IncidentStatus.RESOLVED
        incident.resolved_at, incident.resolved_by = resolved_at, by

    async def get_incident(self, incident_id: str) -> Incident | None:
        d = await self._data()
        incident = d.incidents.get(incident_id)
        return copy.deepcopy(incident) if incident is not None else None

    async def list_incidents(
        self, *, status: IncidentStatus | None = None, rule: str | None = None, limit: int = 100
    ) -> list[Incident]:
        d = await self._data()
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        found = [
            i
            for i in d.incidents.values()
            if (status is None or i.status is status) and (rule is None or i.rule == rule)
        ]
        found.sort(key=lambda i: (i.opened_at, i.id), reverse=True)
        return [dataclasses.replace(copy.deepcopy(i), timeline=[]) for i in found[:limit]]

    async def open_incidents(self) -> list[Incident]:
        d = await self._data()
        return [
            copy.deepcopy(i)
            for i in sorted(d.incidents.values(), key=lambda i: (i.opened_at, i.id))
            if i.status is IncidentStatus.OPEN
        ]

    async def incident_entries(
        self, incident_ids: Sequence[str], kinds: Collection[str]
    ) -> dict[str, list[TimelineEntry]]:
        d = await self._data()
        found: dict[str, list[TimelineEntry]] = {}
        for incident_id in dict.fromkeys(incident_ids):
            incident = d.incidents.get(incident_id)
            entries = [e for e in incident.timeline if e.kind in kinds] if incident else []
            if entries:
                found[incident_id] = copy.deepcopy(entries)
        return found

    # -- action ledger -----------------------------------------------------------------------

    async def begin_action(
        self, incident_id: str, rule: str, remediation: str, ts: float, claim: str | None = None
    ) -> int:
        d = await self._data()
        if claim is not None and (incident_id, claim) in d.claims:
            raise Claimed(f"{incident_id}: {claim} was claimed already")
        action_id = next(d.action_ids)
        if claim is not None:
            d.claims[(incident_id, claim)] = action_id
        d.actions[action_id] = ActionRecord(action_id, incident_id, rule, remediation, ts, RUNNING)
        return action_id

    async def end_action(self, action_id: int, outcome: str) -> None:
        d = await self._data()
        if outcome == RUNNING:
            raise ValueError(f"action {action_id}: end it with its outcome, not {RUNNING!r}")
        action = d.actions[action_id]
        if action.outcome == RUNNING:  # ending twice keeps the first outcome
            d.actions[action_id] = dataclasses.replace(action, outcome=outcome)

    async def running_actions(self) -> list[ActionRecord]:
        d = await self._data()
        running = [a for a in d.actions.values() if a.outcome == RUNNING]
        return sorted(running, key=lambda a: (a.ts, a.id))

    async def last_action(self, rule: str, remediation: str) -> float | None:
        d = await self._data()
        times = [
            a.ts for a in d.actions.values() if a.rule == rule and a.remediation == remediation
        ]
        return max(times, default=None)

    async def count_actions(
        self, since: float, *, exclude: frozenset[str] = frozenset(), only: str | None = None
    ) -> int:
        d = await self._data()
        return sum(
            1
            for a in d.actions.values()
            if a.ts >= since
            and a.remediation not in exclude
            and (only is None or a.remediation == only)
        )

    # -- small JSON values -------------------------------------------------------------------

    async def get_value(self, namespace: str, key: str) -> Any:
        d = await self._data()
        text = d.values.get((namespace, key))
        return None if text is None else json.loads(text)

    async def values(self, namespace: str) -> dict[str, Any]:
        d = await self._data()
        return {
            key: json.loads(text)
            for (space, key), text in sorted(d.values.items())
            if space == namespace
        }

    async def put_value(self, namespace: str, key: str, value: Any) -> None:
        d = await self._data()
        if value is None:
            d.values.pop((namespace, key), None)
        else:
            # A JSON round trip copies, and fails on what SQLite could not store either.
            d.values[(namespace, key)] = json.dumps(value)

    async def put_values(self, namespace: str, values: Mapping[str, Any]) -> None:
        d = await self._data()
        # All serialised first: one bad value writes nothing.
        texts = {k: None if v is None else json.dumps(v) for k, v in values.items()}
        for key, text in texts.items():
            if text is None:
                d.values.pop((namespace, key), None)
            else:
                d.values[(namespace, key)] = text

    # -- paging outbox -----------------------------------------------------------------------

    async def outbox_add(self, incident_id: str, remediation: str, phase: str, ts: float) -> int:
        d = await self._data()
        item_id = next(d.outbox_ids)
        item = OutboxItem(item_id, incident_id, remediation, phase, ts, ts, 0, "")
        d.outbox[item_id] = OutboxRow(item)
        return item_id

    async def outbox_due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        d = await self._data()
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        due = [r.item for r in d.outbox.values() if r.outcome is None and r.item.next_at <= now]
        return sorted(due, key=lambda i: (i.next_at, i.id))[:limit]

    async def outbox_pending(self, incident_id: str) -> list[OutboxItem]:
        d = await self._data()
        rows = (r for r in d.outbox.values() if r.outcome is None)
        return sorted(
            (r.item for r in rows if r.item.incident_id == incident_id), key=lambda i: i.id
        )

    async def outbox_reschedule(
        self, item_id: int, next_at: float, attempts: int, error: str
    ) -> None:
        d = await self._data()
        row = d.outbox[item_id]
        if row.outcome is None:  # a finished item is never due again
            row.item = dataclasses.replace(
                row.item, next_at=next_at, attempts=attempts, last_error=error
            )

    async def outbox_finish(self, item_id: int, outcome: str) -> None:
        d = await self._data()
        row = d.outbox[item_id]
        if row.outcome is None:  # finishing twice keeps the first outcome
            row.outcome = outcome

    # -- retention ---------------------------------------------------------------------------

    # -- procedure runs ------------------------------------------------------------------------

    async def save_procedure_run(self, run: Mapping[str, Any]) -> None:
        d = await self._data()
        d.procedure_runs[run["id"]] = json.dumps(dict(run))

    async def get_procedure_run(self, run_id: str) -> dict[str, Any] | None:
        text = (await self._data()).procedure_runs.get(run_id)
        return None if text is None else dict(json.loads(text))

    async def list_procedure_runs(
        self, *, procedure: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        runs = [json.loads(t) for t in (await self._data()).procedure_runs.values()]
        runs = [
            r for r in runs if procedure in (None, r["procedure"]) and status in (None, r["status"])
        ]
        runs.sort(key=lambda r: (r["started_at"], r["id"]), reverse=True)
        return runs[:limit]

    async def unfinished_procedure_runs(self) -> list[dict[str, Any]]:
        runs = [json.loads(t) for t in (await self._data()).procedure_runs.values()]
        return sorted(
            (r for r in runs if r["ended_at"] is None), key=lambda r: (r["started_at"], r["id"])
        )

    # -- requests forwarded to the leader -------------------------------------------------------

    async def forward(self, operation: str, args: Mapping[str, Any], received_at: float) -> int:
        item_id = next(self.data.forwarded_ids)
        request = Forwarded(item_id, operation, json.loads(json.dumps(dict(args))), received_at)
        self.data.forwarded[item_id] = [request, False, None]
        return item_id

    async def take_forwarded(self, limit: int = 100) -> list[Forwarded]:
        waiting = sorted(k for k, row in self.data.forwarded.items() if not row[1])[:limit]
        for item_id in waiting:
            self.data.forwarded[item_id][1] = True
        return [self.data.forwarded[k][0] for k in waiting]

    async def answer_forwarded(self, item_id: int, answer: Mapping[str, Any]) -> None:
        row = self.data.forwarded.get(item_id)
        if row is not None and row[1]:
            row[2] = json.dumps(dict(answer))

    async def collect_answer(self, item_id: int) -> dict[str, Any] | None:
        row = self.data.forwarded.get(item_id)
        if row is None or row[2] is None:
            return None
        del self.data.forwarded[item_id]
        return dict(json.loads(row[2]))

    async def withdraw_forwarded(self, item_id: int) -> bool:
        row = self.data.forwarded.get(item_id)
        if row is None or row[1]:
            return False
        del self.data.forwarded[item_id]
        return True

    async def prune(self, before: float) -> Pruned:
        d = await self._data()
        d.procedure_runs = {
            k: t
            for k, t in d.procedure_runs.items()
            if (ended := json.loads(t)["ended_at"]) is None or ended >= before
        }
        for item_id, (request, taken, answer) in list(self.data.forwarded.items()):
            if request.received_at < before and (answer is not None or not taken):
                del self.data.forwarded[item_id]
        old = [
            k
            for k, i in d.incidents.items()
            if i.resolved_at is not None and i.resolved_at < before
        ]
        for key in old:
            del d.incidents[key]
        actions = [k for k, a in d.actions.items() if a.ts < before]
        for action_id in actions:
            del d.actions[action_id]
        d.claims = {k: v for k, v in d.claims.items() if v in d.actions}
        for item_id in [
            k for k, r in d.outbox.items() if r.outcome is not None and r.item.created_at < before
        ]:
            del d.outbox[item_id]
        newest = {r.job: r.id for r in sorted(d.job_runs.values(), key=lambda r: r.id)}
        runs = [
            k
            for k, r in d.job_runs.items()
            if r.ended_at is not None and r.ended_at < before and newest[r.job] != k
        ]
        for run_id in runs:
            del d.job_runs[run_id]
        ended = [k for k, r in d.deploys.items() if r.ended_at is not None and r.ended_at < before]
        for deploy_id in ended:
            del d.deploys[deploy_id]
        return Pruned(len(old), len(actions), len(runs), len(ended))

    # -- job runs ----------------------------------------------------------------------------

    async def add_job_run(
        self, job: str, trigger: str, scheduled_at: float, started_at: float | None
    ) -> int:
        d = await self._data()
        run_id = next(d.job_run_ids)
        d.job_runs[run_id] = JobRun(run_id, job, trigger, scheduled_at, started_at)
        return run_id

    async def finish_job_run(
        self, run_id: int, ended_at: float, outcome: str, detail: str, data: Mapping[str, Any]
    ) -> None:
        d = await self._data()
        run = d.job_runs[run_id]
        if run.outcome is None:  # finishing twice keeps the first end
            stored = json.loads(json.dumps(dict(data)))  # as JSON text would give it back
            d.job_runs[run_id] = dataclasses.replace(
                run, ended_at=ended_at, outcome=outcome, detail=detail, data=stored
            )

    async def job_runs(self, job: str, limit: int = 20) -> list[JobRun]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        d = await self._data()
        runs = sorted((r for r in d.job_runs.values() if r.job == job), key=lambda r: -r.id)
        return runs[:limit]

    async def latest_job_runs(self, outcome: str | None = None) -> dict[str, JobRun]:
        d = await self._data()
        found: dict[str, JobRun] = {}
        for run in sorted(d.job_runs.values(), key=lambda r: r.id):
            if outcome is None or run.outcome == outcome:
                found[run.job] = run
        return found

    async def unfinished_job_runs(self) -> list[JobRun]:
        d = await self._data()
        return sorted((r for r in d.job_runs.values() if r.outcome is None), key=lambda r: r.id)

    # -- leadership --------------------------------------------------------------------------

    async def claim_lease(self, holder: str, ttl: float) -> Lease:
        now, lease = self.wall(), self.data.lease
        if not lease:
            lease.append((holder, 1, now + ttl))
        elif lease[0][0] == holder:
            lease[0] = (holder, lease[0][1], now + ttl)
        elif lease[0][2] <= now:
            lease[0] = (holder, lease[0][1] + 1, now + ttl)
        current, epoch, expires_at = lease[0]
        return Lease(current, epoch, max(0.0, expires_at - now))

    async def release_lease(self, holder: str) -> None:
        lease = self.data.lease
        if lease and lease[0][0] == holder:
            lease[0] = (holder, lease[0][1], self.wall())

    async def check_epoch(self, holder: str, epoch: int) -> None:
        lease = self.data.lease
        if not lease or lease[0][:2] != (holder, epoch) or lease[0][2] <= self.wall():
            raise Fenced(f"{holder} no longer holds the lease with epoch {epoch}")

    # -- deploys -----------------------------------------------------------------------------

    async def create_deploy(self, deploy: Deploy) -> None:
        d = await self._data()
        if deploy.id in d.deploys:
            raise ValueError(f"deploy {deploy.id!r} already exists")
        d.deploys[deploy.id] = _as_stored(deploy)

    async def append_deploy_timeline(self, deploy_id: str, entry: DeployEntry) -> None:
        d = await self._data()
        d.deploys[deploy_id].timeline.append(_as_stored(entry))

    async def update_deploy(
        self,
        deploy_id: str,
        *,
        status: str,
        ended_at: float | None = None,
        incident: str | None = None,
    ) -> None:
        d = await self._data()
        deploy = d.deploys[deploy_id]
        if deploy.ended_at is not None:  # its first end stays
            return
        deploy.status, deploy.ended_at = status, ended_at
        if incident is not None:
            deploy.incident = incident

    async def get_deploy(self, deploy_id: str) -> Deploy | None:
        d = await self._data()
        deploy = d.deploys.get(deploy_id)
        return copy.deepcopy(deploy) if deploy is not None else None

    async def list_deploys(self, *, status: str | None = None, limit: int = 100) -> list[Deploy]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        d = await self._data()
        found = [r for r in d.deploys.values() if status is None or r.status == status]
        found.sort(key=lambda r: (r.started_at, r.id), reverse=True)
        return [dataclasses.replace(copy.deepcopy(r), timeline=[]) for r in found[:limit]]

    async def deploy_entries(
        self, deploy_ids: Sequence[str], kinds: Collection[str]
    ) -> dict[str, list[DeployEntry]]:
        d = await self._data()
        found: dict[str, list[DeployEntry]] = {}
        for deploy_id in dict.fromkeys(deploy_ids):
            deploy = d.deploys.get(deploy_id)
            entries = [e for e in deploy.timeline if e.kind in kinds] if deploy else []
            if entries:
                found[deploy_id] = copy.deepcopy(entries)
        return found


T = TypeVar("T", Deploy, DeployEntry)


def _as_stored(record: T) -> T:
    """A copy as the JSON columns would give it back (a kind enum becomes its text)."""
    stored = copy.deepcopy(record)
    if isinstance(stored, DeployEntry):
        stored.kind = str(stored.kind)
        stored.data = json.loads(json.dumps(stored.data))
    else:
        stored.baseline = json.loads(json.dumps(stored.baseline))
        stored.data = json.loads(json.dumps(stored.data))
        stored.timeline = [_as_stored(e) for e in stored.timeline]
    return stored
