"""Leadership on a ManualClock: one leader per epoch, renewals, a graceful hand-over, a store
that stops answering, a leader paused past its lease."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from daemon.core.clock import ManualClock
from daemon.runtime.leadership import LeaderMetrics, Leadership, Role
from daemon.store.protocol import Lease
from tests.memory_store import MemoryData, MemoryStore


class FlakyStore(MemoryStore):
    """The shared lease table, as one replica reaches it: `down` makes claims fail, `hang`
    makes them wait forever."""

    down = False
    hang = False

    async def claim_lease(self, holder: str, ttl: float) -> Lease:
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise ConnectionRefusedError("127.0.0.1:5432")
        return await super().claim_lease(holder, ttl)


class Replica:
    def __init__(self, name: str, clock: ManualClock, data: MemoryData) -> None:
        self.store = FlakyStore(data)
        self.store.wall = clock.now  # the store's clock
        self.registry = CollectorRegistry()
        self.leadership = Leadership(
            self.store, clock, name, ttl=9.0, metrics=LeaderMetrics(self.registry)
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.leadership.run())

    async def pause(self) -> None:
        """SIGSTOP: its loop does not run, whatever time passes."""
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def metric(self, name: str) -> float | None:
        value: float | None = self.registry.get_sample_value(name)
        return value


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def pair(clock: ManualClock) -> AsyncIterator[tuple[Replica, Replica]]:
    data = MemoryData()
    a, b = Replica("a", clock, data), Replica("b", clock, data)
    a.start()
    await clock.quiet()
    b.start()
    await clock.quiet()
    yield a, b
    for r in (a, b):
        await r.pause()


def leaders(*replicas: Replica) -> list[tuple[str, int | None]]:
    return [
        (r.leadership.holder, r.leadership.epoch)
        for r in replicas
        if r.leadership.acting_epoch() is not None
    ]


async def test_one_replica_leads_the_other_waits_and_knows_who_leads(
    clock: ManualClock, pair: tuple[Replica, Replica]
) -> None:
    a, b = pair
    assert leaders(a, b) == [("a", 1)]
    assert (b.leadership.role, b.leadership.leader) == (Role.STANDBY, "a")
    for _ in range(10):  # renewals every ttl/3 keep it
        await clock.advance(3.0)
        assert leaders(a, b) == [("a", 1)]
    assert a.metric("runbookd_leader") == 1
    assert b.metric("runbookd_leader") == 0
    assert a.metric("runbookd_leader_epoch") == b.metric("runbookd_leader_epoch") == 1
    assert a.metric("runbookd_lease_age_seconds") == 0.0


async def test_a_graceful_stop_hands_over_within_a_renewal_period(
    clock: ManualClock, pair: tuple[Replica, Replica]
) -> None:
    a, b = pair
    await a.pause()
    await a.leadership.resign()
    assert leaders(a, b) == []
    await clock.advance(3.0)
    assert leaders(a, b) == [("b", 2)]


async def test_a_leader_cut_off_from_the_store_stops_at_its_lease_end_and_not_before(
    clock: ManualClock, pair: tuple[Replica, Replica]
) -> None:
    a, b = pair
    start = clock.now()
    await clock.advance(3.0)  # a renewed at t=3: valid until t=12
    a.store.down = True
    while clock.now() - start < 11.0:
        await clock.advance(1.0)
        assert leaders(a, b) == [("a", 1)], clock.now() - start
    await clock.advance(1.0)  # t = 12: a stops; b, claiming at the same time, leads
    assert a.leadership.role is Role.STANDBY
    assert leaders(a, b) == [("b", 2)]
    assert a.metric("runbookd_lease_age_seconds") == 9.0


async def test_a_claim_that_hangs_counts_as_no_answer(
    clock: ManualClock, pair: tuple[Replica, Replica]
) -> None:
    a, b = pair
    a.store.hang = True
    await clock.advance(15.0)
    assert a.leadership.role is Role.STANDBY
    assert leaders(a, b) == [("b", 2)]


async def test_a_leader_paused_past_its_lease_acts_on_nothing_when_it_resumes(
    clock: ManualClock, pair: tuple[Replica, Replica]
) -> None:
    a, b = pair
    await a.pause()  # SIGSTOP, still believing it leads
    await clock.advance(12.0)
    assert leaders(b) == [("b", 2)]
    # SIGCONT: before its loop runs again, it already knows it may not act.
    assert a.leadership.role is Role.LEADER
    assert a.leadership.acting_epoch() is None
    a.start()
    await clock.quiet()
    assert (a.leadership.role, a.leadership.leader) == (Role.STANDBY, "b")
    assert leaders(a, b) == [("b", 2)]


async def test_a_leader_that_gets_the_lease_back_under_a_new_epoch_steps_down_first(
    clock: ManualClock, pair: tuple[Replica, Replica]
) -> None:
    """a is paused past its lease; b leads, then stops without a word; a resumes and its claim
    takes the lease again, under a new epoch. What a holds in memory is from before b's epoch:
    it must step down (its daemon restarts as a standby), not carry on as if it had led all
    along."""
    a, b = pair
    await a.pause()
    await clock.advance(12.0)
    assert leaders(a, b) == [("b", 2)]
    await b.pause()  # kill -9: its lease runs out
    await clock.advance(12.0)
    a.start()  # SIGCONT: its renewal comes first
    await clock.quiet()
    assert (a.leadership.role, a.leadership.epoch) == (Role.STANDBY, None)
    assert leaders(a, b) == []
    await clock.advance(3.0)  # a's next claim: a new holder would lead now, a does too
    assert leaders(a, b) == [("a", 3)]
