"""Where incidents, timelines and the action ledger live, behind one protocol.

The embedded default is SQLite in the state directory (daemon/store/sqlite/); PostgreSQL
(daemon/store/postgres/) is for several replicas. Both pass the same tests
(tests/store_contract.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from daemon.core.models import Incident, IncidentStatus, TimelineEntry


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One execution in the ledger. `outcome` is "running" from begin until end."""

    id: int
    incident_id: str
    rule: str
    remediation: str
    ts: float
    outcome: str


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A notification still to deliver: `phase` is "execute" (the page) or "resolve"."""

    id: int
    incident_id: str
    remediation: str
    phase: str
    created_at: float
    next_at: float
    attempts: int
    last_error: str


@dataclass(frozen=True, slots=True)
class JobRun:
    """One run of a scheduled job. `trigger`: "schedule", "catch_up", "manual" or "procedure".
    `started_at` is None for a run that never started (missed, skipped); `outcome` is None
    while the run goes on."""

    id: int
    job: str
    trigger: str
    scheduled_at: float
    started_at: float | None
    ended_at: float | None = None
    outcome: str | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Fenced(Exception):
    """This replica's epoch is no longer the lease's: another replica leads now."""


class Claimed(Fenced):
    """The step was claimed already (`begin_action`'s `claim`): by another replica that led,
    or by an earlier run of this one. Never run twice."""


@dataclass(frozen=True, slots=True)
class Lease:
    """Who leads, with which fencing epoch, and for how many seconds more, as the store's
    clock had it when it answered (relative, so the replicas' clocks need not agree)."""

    holder: str
    epoch: int
    remaining: float


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A request a standby received and left in the store for the leader to carry out
    (daemon/api/acts.py names the operations; daemon/runtime/forwarding.py moves them)."""

    id: int
    operation: str
    args: dict[str, Any]
    received_at: float


class StoreUnavailable(RuntimeError):
    """The store's database cannot be used: unreachable, refusing us, or holding a schema
    newer than this runbookd knows. The message says where, never with a password."""


@dataclass(slots=True)
class DeployEntry:
    """One step on a deploy's timeline (daemon/deploys/models.py names the kinds)."""

    ts: float
    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts, "kind": self.kind, "message": self.message, "data": self.data}


@dataclass(slots=True)
class Deploy:
    """One deploy and what its watch came to. `status` is "watching" or "rolling_back" until
    the deploy ends (`ended_at` set); `previous` is the last known good version when it
    began, `baseline` the watched values before it (None: unknown), `incident` the incident
    that rolled it back or paged about it, `data` what its source told (a Vercel deployment)."""

    id: str
    version: str
    environment: str
    kind: str
    source: str
    started_at: float
    commit: str | None = None
    by: str | None = None
    previous: str | None = None
    baseline: dict[str, float | None] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "watching"
    ended_at: float | None = None
    incident: str | None = None
    timeline: list[DeployEntry] = field(default_factory=list)

    def to_json(self, *, with_timeline: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "version": self.version,
            "environment": self.environment,
            "kind": self.kind,
            "source": self.source,
            "started_at": self.started_at,
            "commit": self.commit,
            "by": self.by,
            "previous": self.previous,
            "baseline": self.baseline,
            "data": self.data,
            "status": self.status,
            "ended_at": self.ended_at,
            "incident": self.incident,
        }
        if with_timeline:
            out["timeline"] = [e.to_json() for e in self.timeline]
        return out


class Pruned(NamedTuple):
    """How many rows `Store.prune` deleted."""

    incidents: int
    actions: int
    job_runs: int = 0
    deploys: int = 0


class Store(Protocol):
    async def open(self) -> None:
        """Create the schema if needed. Called once at startup."""

    async def close(self) -> None: ...

    def batch(self) -> AbstractAsyncContextManager[None]:
        """One transaction for everything the calling task writes inside the block: it is
        committed when the block ends (the exit returns after the commit, which the store may
        share with other tasks' writes), or rolled back whole if the block raises (or is
        cancelled). A write that fails raises at the call or, where the store defers the
        block's writes, when the block ends, which then writes nothing of it. The task reads
        its own writes; other tasks' reads and writes wait until the block ends, so never wait
        inside it on a task that uses the store. A batch inside a batch joins it. Ids handed
        out inside a rolled-back batch may be handed out again."""

    async def create_incident(self, incident: Incident) -> None:
        """Insert a new incident with its timeline so far; a duplicate id is a ValueError."""

    async def append_timeline(self, incident_id: str, entry: TimelineEntry) -> None:
        """Unknown incident: KeyError."""

    async def acknowledge_incident(self, incident_id: str, by: str, at: float) -> None:
        """Record who acknowledged the incident; the first acknowledgement stays."""
        ...

    async def resolve_incident(
        self, incident_id: str, resolved_at: float, *, by: str | None = None
    ) -> None:
        """`by`: the operator who closed it (None: it cleared). Unknown incident: KeyError.
        Resolving twice keeps the first time and closer."""

    async def get_incident(self, incident_id: str) -> Incident | None:
        """The incident with its whole timeline, oldest entry first."""

    async def list_incidents(
        self, *, status: IncidentStatus | None = None, rule: str | None = None, limit: int = 100
    ) -> list[Incident]:
        """Newest first (ties by id, descending), without timelines; limit < 0: ValueError."""

    async def open_incidents(self) -> list[Incident]:
        """Every open incident with its timeline, oldest first (what a restart resumes)."""

    async def incident_entries(
        self, incident_ids: Sequence[str], kinds: Collection[str]
    ) -> dict[str, list[TimelineEntry]]:
        """Of these incidents, the timeline entries of these kinds, oldest first, by incident
        id (an incident with none, or unknown, is absent): what a list of incidents shows of
        each (the status page's history, their public updates) in one read, not one per
        incident."""

    # -- the action ledger: cooldowns, the budget, run limits, crash recovery -----------------

    async def begin_action(
        self, incident_id: str, rule: str, remediation: str, ts: float, claim: str | None = None
    ) -> int:
        """Write "running" BEFORE executing, so a crash mid-run is found at restart. `claim`
        names the step and its attempt within the incident: a second begin with the same
        claim raises `Claimed` and writes nothing."""

    async def end_action(self, action_id: int, outcome: str) -> None:
        """Unknown id: KeyError."""

    async def running_actions(self) -> list[ActionRecord]:
        """Actions begun and never ended, oldest first: what a crash interrupted."""

    async def last_action(self, rule: str, remediation: str) -> float | None:
        """When this remediation last began for this rule (any outcome), or None."""

    async def count_actions(
        self, since: float, *, exclude: frozenset[str] = frozenset(), only: str | None = None
    ) -> int:
        """Actions begun at or after `since` (any outcome), leaving out the `exclude`d
        remediations; with `only`, just that remediation's (whatever the rule)."""

    # -- small JSON values kept for remediations and the circuit breaker ----------------------

    async def get_value(self, namespace: str, key: str) -> Any:
        """The stored JSON value, or None."""

    async def put_value(self, namespace: str, key: str, value: Any) -> None:
        """Insert or replace; None deletes."""

    async def put_values(self, namespace: str, values: Mapping[str, Any]) -> None:
        """`put_value` for each key, in one transaction; nothing is written if one value is
        not JSON (a TypeError)."""

    async def values(self, namespace: str) -> dict[str, Any]:
        """Every key of a namespace with its value."""

    # -- the paging outbox: notifications survive restarts, each delivered once ---------------

    async def outbox_add(self, incident_id: str, remediation: str, phase: str, ts: float) -> int:
        """A new item, due at once."""

    async def outbox_due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        """Unfinished items with next_at <= now, oldest first."""

    async def outbox_pending(self, incident_id: str) -> list[OutboxItem]:
        """The incident's unfinished items, whenever due, by id."""

    async def outbox_reschedule(
        self, item_id: int, next_at: float, attempts: int, error: str
    ) -> None: ...

    async def outbox_finish(self, item_id: int, outcome: str) -> None:
        """Delivered or given up: the item is never due again."""

    async def prune(self, before: float) -> Pruned:
        """Delete incidents resolved before `before` (with their timelines), ledger entries
        and finished outbox items older than it, deploys that ended before it (with their
        timelines), procedure runs that ended before it, and forwarded requests received
        before it that were answered or never taken. Open incidents and deploys still watched
        are never pruned."""

    # -- job runs ----------------------------------------------------------------------------

    async def add_job_run(
        self, job: str, trigger: str, scheduled_at: float, started_at: float | None
    ) -> int:
        """Record a run as begun (or, with `started_at` None, one that never started)."""

    async def finish_job_run(
        self, run_id: int, ended_at: float, outcome: str, detail: str, data: Mapping[str, Any]
    ) -> None:
        """The run's end. Unknown id: KeyError; finishing twice keeps the first end."""

    async def job_runs(self, job: str, limit: int = 20) -> list[JobRun]:
        """The job's runs, newest first (by id); limit < 0: ValueError."""

    async def latest_job_runs(self, outcome: str | None = None) -> dict[str, JobRun]:
        """Each job's newest run (with that outcome, if given), by job name."""

    async def unfinished_job_runs(self) -> list[JobRun]:
        """Runs begun and never finished (a crash or a stop cut them short), oldest first."""

    # -- leadership --------------------------------------------------------------------------

    async def claim_lease(self, holder: str, ttl: float) -> Lease:
        """Take or renew the leader's lease for `ttl` seconds, in one statement, on the store's
        clock: it is `holder`'s if free, expired or already its own. A new holder gets the next
        fencing epoch; a renewal keeps it. Returns the lease as it stands, whoever holds it."""

    async def release_lease(self, holder: str) -> None:
        """End `holder`'s lease now (a graceful stop): a standby need not wait for its expiry."""

    async def check_epoch(self, holder: str, epoch: int) -> None:
        """`Fenced` unless `holder` holds the lease with `epoch` and it has not expired, on
        the store's clock. Inside a batch, a takeover cannot commit between this check and
        the batch's other writes."""

    # -- procedure runs (daemon/procedures/models.py gives the documents their shape) ---------

    async def save_procedure_run(self, run: Mapping[str, Any]) -> None:
        """Insert or replace the run `run["id"]` (a JSON document with `procedure`, `status`,
        `started_at` and `ended_at`)."""

    async def get_procedure_run(self, run_id: str) -> dict[str, Any] | None: ...

    async def list_procedure_runs(
        self, *, procedure: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first (by started_at, then id); limit < 0: ValueError."""

    async def unfinished_procedure_runs(self) -> list[dict[str, Any]]:
        """Runs without an end, oldest first: what a new leader (or a restart) resumes."""

    # -- requests forwarded from a standby to the leader --------------------------------------

    async def forward(self, operation: str, args: Mapping[str, Any], received_at: float) -> int:
        """Leave a request for the leader; its id."""

    async def take_forwarded(self, limit: int = 100) -> list[Forwarded]:
        """The requests nobody took yet, oldest first, marked taken: another call (another
        replica's) never gets them again."""

    async def answer_forwarded(self, item_id: int, answer: Mapping[str, Any]) -> None:
        """The leader's answer to a request it took (unknown id: nothing happens, the standby
        withdrew it or it was pruned)."""

    async def collect_answer(self, item_id: int) -> dict[str, Any] | None:
        """The answer to a request, removing the request with it; None while unanswered."""

    async def withdraw_forwarded(self, item_id: int) -> bool:
        """Remove a request no leader took yet: True; False if one took it already."""

    # -- deploys -----------------------------------------------------------------------------

    async def create_deploy(self, deploy: Deploy) -> None:
        """Insert a new deploy with its timeline so far; a duplicate id is a ValueError."""

    async def append_deploy_timeline(self, deploy_id: str, entry: DeployEntry) -> None:
        """Unknown deploy: KeyError."""

    async def update_deploy(
        self,
        deploy_id: str,
        *,
        status: str,
        ended_at: float | None = None,
        incident: str | None = None,
    ) -> None:
        """Set the status, and the end and the incident when given (None leaves them). A
        deploy that has ended keeps its first end: later updates change nothing. Unknown
        deploy: KeyError."""

    async def get_deploy(self, deploy_id: str) -> Deploy | None:
        """The deploy with its whole timeline, oldest entry first."""

    async def list_deploys(self, *, status: str | None = None, limit: int = 100) -> list[Deploy]:
        """Newest first (by started_at, then id, descending), without timelines; limit < 0:
        ValueError."""

    async def deploy_entries(
        self, deploy_ids: Sequence[str], kinds: Collection[str]
    ) -> dict[str, list[DeployEntry]]:
        """Of these deploys, the timeline entries of these kinds, oldest first, by deploy id
        (a deploy with none, or unknown, is absent): what a list of deploys shows of each
        (its breach, its end) in one read, not one per deploy."""
