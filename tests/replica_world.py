"""The world of the replicas' model-based test (tests/unit/test_model_replicas.py): several
runbookd processes on one database, each with the real Leadership, engine, pipeline, job
runner and fence, wired as daemon/runtime/daemon.py wires them (`_follow_the_lease`,
`_take_role`, `_act`), on one ManualClock, with the single daemon's model
(tests/model_world.py): its rules, its fakes, its `quiesce` and `advance`.

- `Database`: the one PostgreSQL: the MemoryStore's data shared by every process, its clock
  (the lease's), one transaction at a time, and the lease row's FOR SHARE lock: a claim waits
  for a transaction that checked the epoch (sql.CHECK_EPOCH). It can go down for everyone.
- `Process`: one incarnation of a replica (a restart is a new one, with a new holder name, as
  the daemon's holder has its pid). Its clock may be offset and run slightly fast or slow; a
  pause (SIGSTOP) holds its timers, its store trips and the answers of its remediation calls
  until it resumes; a kill -9 cancels its tasks where they wait, rolling back its open
  transaction; a network cut makes its store trips fail.
- `Slot`: systemd for one replica: starts a process, and starts a new one when it exits (it
  lost the lease: exit 5; or a start or a core task failed).

Every call of a fake target, every ledger claim and every job run is witnessed: who made it,
under which epoch, and what the store's lease said at that instant (`Database.violations`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from prometheus_client import CollectorRegistry

from daemon.core.clock import ManualClock, Timer
from daemon.core.models import Incident, RemediationResult
from daemon.engine.engine import Engine
from daemon.engine.timeline import Recorder
from daemon.jobs.config import JobConfig
from daemon.jobs.metrics import JobMetrics
from daemon.jobs.runner import JobRunner
from daemon.pipeline.pipeline import Pipeline
from daemon.pipeline.plan import Plan
from daemon.runtime.leadership import LeaderMetrics, Leadership, Role
from daemon.runtime.metrics import Metrics
from daemon.store.protocol import Lease
from remediations.base import Hooks, RemediationConfig, RemediationContext
from tests.memory_store import Batch, MemoryData, MemoryStore
from tests.model_world import (
    BREAKER_AFTER,
    BUDGET,
    CHECKS,
    STALE_AFTER,
    Fake,
    _quiescing,
    forever,
    make_fakes,
    remediation_configs,
    rule_configs,
)
from tests.world import FakeConfig

T = TypeVar("T")

TTL = 9.0
RESTART_SEC = 1.0  # systemd's RestartSec
# A job every minute whose run may hang, caught up after a failover if it is under 2 min late.
JOBS = {
    "backup": JobConfig.model_validate({"run": "backup", "schedule": "* * * * *", "catch_up": "2m"})
}


def make_targets() -> dict[str, Fake]:
    """The single daemon's fakes (tests/model_world.py), and the job's."""
    return make_fakes() | {"backup": Fake("backup")}


def job_configs() -> dict[str, RemediationConfig]:
    return remediation_configs() | {"backup": FakeConfig.model_validate({"timeout": "20s"})}


async def finished(task: asyncio.Task[T]) -> T:
    """`task`'s result, once it ends; AssertionError if the loop goes quiet first: it waits on
    something nothing will ever give (a deadlock), and a hung step would hang the test."""
    loop = asyncio.get_running_loop()
    token = object()
    _quiescing.insert(0, token)  # a `quiesce` inside the task expects this loop to be ready
    try:
        idle = 0
        while not task.done():
            await asyncio.sleep(0)
            scheduled = loop._scheduled  # type: ignore[attr-defined]
            due = bool(scheduled) and scheduled[0].when() <= loop.time() + 0.01
            busy = bool(loop._ready)  # type: ignore[attr-defined]
            idle = 0 if busy or due else idle + 1
            if idle >= 3 and not task.done():
                stack = "".join(traceback.format_stack(task.get_stack()[-1]))
                task.cancel()
                raise AssertionError(f"the step never ends; it waits at\n{stack}")
    finally:
        _quiescing.remove(token)
    return task.result()


class StoreDown(ConnectionRefusedError):
    """What a trip to a database that does not answer raises."""


@dataclass
class Call:
    """A remediation called (execute or resolve), as the fake target saw it."""

    holder: str
    remediation: str
    phase: str
    incident: str
    at: float  # the store's clock


@dataclass
class Database:
    clock: ManualClock
    data: MemoryData = field(default_factory=MemoryData)
    batch: Batch | None = None  # the one open transaction
    share: Batch | None = None  # the transaction holding the lease row FOR SHARE
    down: bool = False
    claims: dict[int, tuple[str, int]] = field(default_factory=dict)  # action id -> holder, epoch
    run_claims: dict[int, tuple[str, int]] = field(default_factory=dict)  # job run id -> ...
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    expired: dict[int, float] = field(default_factory=dict)  # epoch -> its lease's last expiry

    def lease(self) -> tuple[str, int, float] | None:
        return self.data.lease[0] if self.data.lease else None

    def current(self, holder: str, epoch: int | None) -> bool:
        """`holder` holds the lease with `epoch`, unexpired, on the store's clock."""
        lease = self.lease()
        return lease is not None and lease[:2] == (holder, epoch) and lease[2] > self.clock.now()

    def note_lease(self) -> None:
        if (lease := self.lease()) is not None:
            self.expired[lease[1]] = lease[2]


@dataclass
class Pending:
    """What one transaction claimed, checked when it commits."""

    checked: tuple[str, int] | None = None  # the epoch its check_epoch found current
    actions: list[tuple[int, str, int | None]] = field(default_factory=list)
    runs: list[tuple[int, str, int | None]] = field(default_factory=list)  # job runs


class ReplicaStore(MemoryStore):
    """One process's connection to the shared database."""

    def __init__(self, db: Database, process: Process) -> None:
        # Not MemoryStore.__init__: the open transaction is the database's, not this store's.
        self.data = db.data
        self.db = db
        self.process = process
        self.wall = db.clock.now  # the lease's clock is the database's
        self.dead = False
        self.pending: dict[int, Pending] = {}  # id(batch) -> its claims

    @property
    def _batch(self) -> Batch | None:
        return self.db.batch

    @_batch.setter
    def _batch(self, batch: Batch | None) -> None:
        self.db.batch = batch

    async def _reach(self) -> None:
        """One trip to the database: a dead process makes none, a paused one waits to run, a
        database down or out of reach fails it."""
        p = self.process
        if self.dead:
            await forever()
        await p.trip()
        if self.dead:
            await forever()
        if self.db.down or p.cut:
            raise StoreDown("127.0.0.1:5432")

    async def _data(self) -> MemoryData:
        await self._reach()
        return await super()._data()

    def _own_batch(self) -> Batch | None:
        batch = self.db.batch
        return batch if batch is not None and batch.owner is asyncio.current_task() else None

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        if self._own_batch() is not None:
            yield
            return
        committed = await self._data()
        batch = self.db.batch = Batch(asyncio.current_task(), committed.working_copy())
        pending = self.pending[id(batch)] = Pending()
        try:
            yield
            await self._reach()  # COMMIT is a trip too: it may fail, and nothing is written
            self._commit_claims(pending)
            self.data.commit(batch.work)
        finally:
            self.db.batch = None
            if self.db.share is batch:
                self.db.share = None
            del self.pending[id(batch)]
            batch.done.set()

    def _commit_claims(self, pending: Pending) -> None:
        lease = self.db.lease()
        for what, claims, into in (
            ("action", pending.actions, self.db.claims),
            ("job run", pending.runs, self.db.run_claims),
        ):
            for claim_id, holder, epoch in claims:
                if (
                    pending.checked != (holder, epoch)
                    or lease is None
                    or lease[:2]
                    != (
                        holder,
                        epoch,
                    )
                ):
                    self.db.violations.append(
                        f"{what} {claim_id} committed by {holder} under epoch {epoch}: its "
                        f"transaction checked {pending.checked}, the lease is {lease}"
                    )
                into[claim_id] = (holder, epoch or 0)

    async def _lease_free(self) -> None:
        """An UPDATE of the lease row waits for the transaction holding it FOR SHARE."""
        while (share := self.db.share) is not None and share is not self._own_batch():
            await share.done.wait()

    async def claim_lease(self, holder: str, ttl: float) -> Lease:
        await self._reach()
        await self._lease_free()  # then the UPDATE, with no await between
        lease = await super().claim_lease(holder, ttl)
        self.db.note_lease()
        return lease

    async def release_lease(self, holder: str) -> None:
        await self._reach()
        await self._lease_free()
        await super().release_lease(holder)
        self.db.note_lease()

    async def check_epoch(self, holder: str, epoch: int) -> None:
        await self._reach()
        await super().check_epoch(holder, epoch)
        if (batch := self._own_batch()) is not None:
            self.db.share = batch
            self.pending[id(batch)].checked = (holder, epoch)

    async def begin_action(
        self, incident_id: str, rule: str, remediation: str, ts: float, claim: str | None = None
    ) -> int:
        action_id = await super().begin_action(incident_id, rule, remediation, ts, claim)
        holder, epoch = self.process.holder, self.process.leadership.epoch
        if (batch := self._own_batch()) is not None:
            self.pending[id(batch)].actions.append((action_id, holder, epoch))
        else:
            self._commit_claims(Pending(None, [(action_id, holder, epoch)]))
        return action_id

    async def add_job_run(
        self, job: str, trigger: str, scheduled_at: float, started_at: float | None
    ) -> int:
        run_id = await super().add_job_run(job, trigger, scheduled_at, started_at)
        if started_at is not None:  # a run that acts (not a missed or skipped one's record)
            holder, epoch = self.process.holder, self.process.leadership.epoch
            pending = self.pending[id(b)] if (b := self._own_batch()) is not None else Pending()
            pending.runs.append((run_id, holder, epoch))
            if b is None:
                self._commit_claims(pending)
        return run_id


class ReplicaClock:
    """A process's clock: the machine's, offset and running at `rate`; while the process is
    paused its sleeps and timeouts do not end (they end when it resumes)."""

    def __init__(self, base: ManualClock, process: Process, offset: float, rate: float) -> None:
        self.base = base
        self.process = process
        self.rate = rate
        self.origin = base.now()
        self.start = base.now() + offset

    def now(self) -> float:
        return self.start + (self.base.now() - self.origin) * self.rate

    def _real(self, seconds: float) -> float:
        return max(0.0, seconds) / self.rate

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(self._real(seconds))
        await self.process.awake()

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        return self.base.call_later(self._real(seconds), lambda: self.process.when_awake(callback))

    @asynccontextmanager
    async def _timeout(self, seconds: float) -> AsyncIterator[object]:
        loop = asyncio.get_running_loop()
        live = [True]
        async with asyncio.timeout(None) as scope:

            def expire() -> None:
                if live[0]:
                    scope.reschedule(loop.time())

            handle = self.base.call_at(
                self.base.now() + self._real(seconds), lambda: self.process.when_awake(expire)
            )
            try:
                yield scope
            finally:
                live[0] = False
                self.base.cancel(handle)

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        return self._timeout(seconds)


class Witnessed(Hooks):
    """One process's handle on a shared fake target: each call is checked against the lease
    at that instant; a paused process hears the answer when it resumes."""

    type: ClassVar[str] = "fake"
    Config = FakeConfig

    def __init__(self, fake: Fake, process: Process) -> None:
        self.fake = fake
        self.process = process
        self.idempotent = fake.idempotent
        self.destructive = fake.destructive
        self.notifier = fake.notifier

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        self.process.witness(self.fake.name, "execute", incident)
        result = await self.fake.execute(ctx, incident)
        await self.process.awake()
        return result

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        if self.fake.notifier:
            self.process.witness(self.fake.name, "resolve", incident)
        result = await self.fake.resolve(ctx, incident)
        await self.process.awake()
        return result


class Process:
    """One incarnation of a replica: what `runbookd run` holds on a PostgreSQL store."""

    def __init__(
        self,
        db: Database,
        name: str,
        fakes: dict[str, Fake],
        *,
        offset: float = 0.0,
        rate: float = 1.0,
    ) -> None:
        self.db = db
        self.holder = name
        self.paused = False
        self.parked: list[Callable[[], Any]] = []  # what a paused process hears on resuming
        self.trips = 0
        self.trap_at: int | None = None  # pause before this many more trips
        self.cut = False
        self.killed = False
        self.acting = False
        self.exited = asyncio.Event()  # lost the lease, or a start or core task failed
        self.tasks: set[asyncio.Task[Any]] = set()
        self.clock = ReplicaClock(db.clock, self, offset, rate)
        self.store = ReplicaStore(db, self)
        self.metrics = Metrics(CollectorRegistry())
        self.leadership = Leadership(
            self.store,
            self.clock,
            name,
            ttl=TTL,
            metrics=LeaderMetrics(CollectorRegistry()),
        )
        self.recorder = Recorder(self.store, self.clock)
        self.rules = rule_configs()
        # Built here, not from a config: Witnessed has no (name, config) constructor.
        remediations: dict[str, Any] = {n: Witnessed(f, self) for n, f in fakes.items()}
        self.pipeline = Pipeline(
            Plan(remediations, job_configs(), budget=BUDGET, breaker_after=BREAKER_AFTER),
            ctx=RemediationContext(None, self.clock),  # type: ignore[arg-type]
            store=self.store,
            recorder=self.recorder,
            metrics=self.metrics,
            clock=self.clock,
            fence=self.leadership,
        )
        self.engine = Engine(
            dict(self.rules),
            staleness=dict.fromkeys(CHECKS, STALE_AFTER),
            store=self.store,
            recorder=self.recorder,
            actions=self.pipeline,
            metrics=self.metrics,
            clock=self.clock,
            fence=self.leadership,
        )
        configs = job_configs()
        self.jobs = JobRunner(
            store=self.store,
            clock=self.clock,
            metrics=JobMetrics(CollectorRegistry()),
            sink=self.engine.observe,
            actions=lambda name: (remediations[name], configs[name]),
            ctx_for=lambda name: self.pipeline.actor.ctx_for(name),
            approvals=self.pipeline.approvals,
            locks=self.pipeline.locks,
            fence=self.leadership,
            watch=self.watch,
        )

    # -- SIGSTOP / SIGCONT ---------------------------------------------------------------------

    def pause(self) -> None:
        self.paused = True

    def unpause(self) -> None:
        """Runs again; what it waited for while stopped comes with `flush`."""
        self.paused = False

    def flush(self) -> None:
        parked, self.parked = self.parked, []
        for callback in parked:
            callback()

    def resume(self) -> None:
        self.unpause()
        self.flush()

    async def awake(self) -> None:
        if self.paused:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.parked.append(lambda: None if fut.done() else fut.set_result(None))
            await fut

    def when_awake(self, callback: Callable[[], None]) -> None:
        if self.paused:
            self.parked.append(callback)
        else:
            callback()

    async def trip(self) -> None:
        self.trips += 1
        if self.trap_at is not None:
            self.trap_at -= 1
            if self.trap_at < 0:
                self.trap_at = None
                self.pause()
        await self.awake()

    # -- what is checked at every call ---------------------------------------------------------

    def witness(self, remediation: str, phase: str, incident: Incident) -> None:
        db, epoch = self.db, self.leadership.acting_epoch()
        db.calls.append(Call(self.holder, remediation, phase, incident.id, db.clock.now()))
        if epoch is None or not db.current(self.holder, epoch):
            db.violations.append(
                f"{self.holder} called {remediation} ({phase}) for {incident.id} at "
                f"{db.clock.now()} under epoch {epoch} (its own {self.leadership.epoch}); the "
                f"lease is {db.lease()}"
            )

    # -- the daemon's start, its role, its stop ------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self.holder} {name}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def watch(self, task: asyncio.Task[Any]) -> None:
        """A core task (Supervisor.watch): its end, but for a stop, ends the process."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda t: None if t.cancelled() else self.exited.set())

    async def tick(self) -> None:
        """Daemon._tick, once: a tick that fails is the ticker's end, and the process's."""
        try:
            await self.engine.tick(self.clock.now())
        except Exception:
            self.exited.set()
            raise

    async def start(self) -> None:
        """Daemon._follow_the_lease: the first claim, the renewals, the first role."""
        await self.leadership.renew()
        self.watch(self.spawn(self.leadership.run(), "lease"))
        await self._take_role()
        self.watch(self.spawn(self._follow(), "leadership"))

    async def _follow(self) -> None:
        while True:
            await self.leadership.changed.wait()
            await self._take_role()

    async def _take_role(self) -> None:
        leadership = self.leadership
        leadership.changed.clear()
        if leadership.role is Role.LEADER and not self.acting:
            await self.engine.restore(announce=False)
            # Daemon._act
            self.acting = True
            await self.engine.announce_restored()
            await self.pipeline.recover(
                self.engine.incidents.values(), dict(self.rules) | self.engine.incident_plans()
            )
            self.watch(self.pipeline.start_outbox())
            await self.jobs.configure(JOBS)
            await self.jobs.start()
        elif leadership.role is Role.STANDBY and self.acting:
            self.exited.set()  # lost the lease: exit 5, to start again as a standby
            await forever()

    async def stop(self) -> None:
        """The daemon's stop, in the reverse order of its start; what is left is cancelled."""
        for task in [t for t in self.tasks if t.get_name().endswith(("leadership", "lease"))]:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self.leadership.resign()
        finally:
            if self.acting:
                await self.jobs.stop()
                await self.pipeline.drain(0)
            await self.cancel_all()
            self.store.dead = True

    async def kill(self) -> None:
        """kill -9: no trip more, every task dies where it waits, its transaction rolls back."""
        self.killed = True
        self.store.dead = True
        self.paused = False  # a stopped process can be killed; what it waited for never comes
        self.parked.clear()
        await self.cancel_all()

    async def cancel_all(self) -> None:
        self.tasks.update(e.task for e in self.jobs.jobs.values() if e.task is not None)
        await cancel_until_done(self.tasks, self.holder)


async def cancel_until_done(tasks: set[asyncio.Task[Any]], whose: str) -> None:
    for _ in range(100):
        left = [t for t in tasks if not t.done() and t is not asyncio.current_task()]
        if not left:
            return
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=0)
        await asyncio.sleep(0)
    raise AssertionError(f"tasks of {whose} kept running")


@dataclass
class Slot:
    """systemd for one replica: a new process (a new holder) whenever the last one exits."""

    name: str
    db: Database
    fakes: dict[str, Fake]
    offset: float = 0.0
    rate: float = 1.0
    process: Process | None = None
    incarnations: int = 0
    supervisor: asyncio.Task[None] | None = None
    stopped: list[Process] = dataclasses.field(default_factory=list)

    def start(self) -> None:
        self.supervisor = asyncio.create_task(self._supervise(), name=f"systemd {self.name}")

    async def _supervise(self) -> None:
        while True:
            self.incarnations += 1
            process = self.process = Process(
                self.db,
                f"{self.name}#{self.incarnations}",
                self.fakes,
                offset=self.offset,
                rate=self.rate,
            )
            starting = process.spawn(process.start(), "start")
            await asyncio.wait([starting])
            if starting.cancelled() or starting.exception() is not None:
                process.exited.set()  # a failed start: exit 1
            await process.exited.wait()
            await process.stop()
            self.stopped.append(process)
            self.process = None
            await self.db.clock.sleep(RESTART_SEC)

    async def kill(self) -> None:
        """kill -9 of the process, and systemd told not to start another."""
        if (supervisor := self.supervisor) is not None:
            self.supervisor = None
            # Again until it ends: a stop under way awaits in its `finally` too.
            await cancel_until_done({supervisor}, f"systemd {self.name}")
        if (process := self.process) is not None:
            await process.kill()
            self.stopped.append(process)
            self.process = None

    @property
    def live(self) -> Process | None:
        """The running (or paused) process, if any: not dead, not stopping."""
        p = self.process
        return p if p is not None and not p.store.dead and not p.exited.is_set() else None
