"""Which replica acts: a lease in the store, claimed and renewed every ttl/3 with a single
statement on the store's clock, with a fencing epoch that grows with each new holder.

No session-level advisory lock: those break behind transaction-pooling proxies (PgBouncer,
Neon, Supabase), which is how an application on this stack reaches PostgreSQL. A leader
acts only while its lease is valid by its own reckoning: the lease's remaining time as the
store gave it, counted from before the claim was sent, so a slow answer only shortens it. A
leader that cannot renew before then stops acting at once, even if its renewal is still on
its way; a process paused past its lease finds it expired the moment it resumes
(`acting_epoch`), before its renewal loop has run again.
"""

from __future__ import annotations

import asyncio
import enum
import math

import structlog
from prometheus_client import CollectorRegistry, Gauge

from daemon.core.clock import Clock
from daemon.store.protocol import Fenced, Lease, Store

log = structlog.get_logger("runbookd.leadership")

DEFAULT_TTL = 10.0


class Role(enum.StrEnum):
    LEADER = "leader"
    STANDBY = "standby"


class LeaderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.leader = Gauge(
            "runbookd_leader", "1 while this replica holds the leader's lease.", registry=registry
        )
        self.epoch = Gauge(
            "runbookd_leader_epoch",
            "The fencing epoch of the lease as this replica last saw it.",
            registry=registry,
        )
        self.lease_age = Gauge(
            "runbookd_lease_age_seconds",
            "Seconds since this replica last heard the store answer a claim of the lease.",
            registry=registry,
        )


class Leadership:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        holder: str,
        *,
        ttl: float = DEFAULT_TTL,
        metrics: LeaderMetrics,
    ) -> None:
        self.store = store
        self.clock = clock
        self.holder = holder
        self.ttl = ttl
        self.metrics = metrics
        self.role = Role.STANDBY
        self.epoch: int | None = None  # ours while we lead
        self.leader: str | None = None  # who leads, as last seen
        self.valid_until = 0.0  # our lease's end, by our clock
        self.last_answer: float | None = None
        self.changed = asyncio.Event()  # set at every change of role
        self._reported_down = False
        metrics.lease_age.set_function(self._lease_age)

    def _lease_age(self) -> float:
        # NaN until the store first answers: unknown, not "just now".
        return math.nan if self.last_answer is None else self.clock.now() - self.last_answer

    # -- the fence (daemon/pipeline/fence.py) --------------------------------------------------

    def may_act(self) -> bool:
        return self.acting_epoch() is not None

    async def check(self) -> None:
        epoch = self.acting_epoch()
        if epoch is None:
            raise Fenced(f"{self.holder} does not lead now")
        await self.store.check_epoch(self.holder, epoch)

    def acting_epoch(self) -> int | None:
        """The epoch to act under, or None: not the leader, or the lease has run out."""
        if self.role is Role.LEADER and self.clock.now() < self.valid_until:
            return self.epoch
        return None

    async def run(self) -> None:
        """Claim and renew until cancelled; then the lease is left to expire (`resign` ends it
        at once on a graceful stop)."""
        while True:
            await self.renew()
            delay = self.ttl / 3
            if self.role is Role.LEADER:  # wake no later than the lease runs out
                delay = min(delay, max(0.0, self.valid_until - self.clock.now()))
            await self.clock.sleep(delay)

    async def renew(self) -> None:
        """One claim or renewal of the lease, and what follows from its answer."""
        sent = self.clock.now()
        lease: Lease | None = None
        try:
            async with self.clock.timeout(self.ttl / 3):
                lease = await self.store.claim_lease(self.holder, self.ttl)
        except Exception as exc:  # the store is down or slow: the lease decides below
            if not self._reported_down:
                log.warning("cannot claim the lease", error=f"{type(exc).__name__}: {exc}")
                self._reported_down = True
        if lease is not None:
            self._reported_down = False
            self.last_answer = self.clock.now()
            self.leader = lease.holder
            self.metrics.epoch.set(lease.epoch)
        if lease is not None and lease.holder == self.holder:
            if self.role is Role.LEADER and lease.epoch != self.epoch:
                # Another replica led in between: what this one holds in memory (plans, job
                # times) is older than that. Down now, so the daemon restarts as a standby; not
                # straight back up in the same breath, which it would never see.
                self._step_down(f"the lease moved to epoch {lease.epoch} meanwhile")
                return
            self.valid_until = sent + lease.remaining
            if self.role is Role.STANDBY:
                self._lead(lease.epoch)
        elif self.role is Role.LEADER:
            if lease is not None:
                self._step_down(f"{lease.holder} holds the lease (epoch {lease.epoch})")
            elif self.clock.now() >= self.valid_until:
                self._step_down("the lease ran out: the store did not answer a renewal")

    def _lead(self, epoch: int) -> None:
        self.role, self.epoch = Role.LEADER, epoch
        self.metrics.leader.set(1)
        log.info("leading", holder=self.holder, epoch=epoch)
        self.changed.set()

    def _step_down(self, why: str) -> None:
        log.warning("stepping down: no longer acting", holder=self.holder, reason=why)
        self.role, self.epoch = Role.STANDBY, None
        self.metrics.leader.set(0)
        self.changed.set()

    async def resign(self) -> None:
        """A graceful stop: end our lease now, so a standby need not wait for it to expire."""
        if self.role is Role.LEADER:
            self._step_down("stopping")
            try:
                async with self.clock.timeout(self.ttl / 3):
                    await self.store.release_lease(self.holder)
            except Exception:  # it expires by itself
                log.warning("cannot release the lease: it expires by itself", exc_info=True)
