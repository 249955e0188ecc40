"""A standby hands an act to the leader through the store and relays its answer; without a
leader in time, a command is withdrawn (nothing done, ever) and alerts are kept for the next
leader; the leader takes requests only while it leads."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from daemon.api.acts import ACTS, LASTING
from daemon.api.port import Answer
from daemon.api.routes import OPERATIONS
from daemon.core.clock import ManualClock
from daemon.runtime.forwarding import WAIT, ForwardedRequests, Forwarder
from daemon.runtime.leadership import LeaderMetrics, Leadership
from tests.memory_store import MemoryData, MemoryStore


class Leader:
    """The leader's half on a shared store, performing acts by recording them."""

    def __init__(self, data: MemoryData, clock: ManualClock, name: str = "a") -> None:
        self.store = MemoryStore(data)
        self.store.wall = clock.now
        self.lease = Leadership(
            self.store, clock, name, ttl=9.0, metrics=LeaderMetrics(CollectorRegistry())
        )
        self.performed: list[tuple[str, dict[str, Any]]] = []
        self.requests = ForwardedRequests(self.store, clock, self.lease, self.perform)

    async def perform(self, act: str, args: dict[str, Any]) -> Answer:
        if act == "broken":
            raise RuntimeError("a bug")
        self.performed.append((act, args))
        return Answer(200, {"done": act}, {"X-By": "leader"})


def standby(data: MemoryData, clock: ManualClock) -> Forwarder:
    store = MemoryStore(data)
    store.wall = clock.now
    return Forwarder(store, clock)


async def test_the_leaders_answer_is_relayed_with_its_status_and_headers() -> None:
    clock, data = ManualClock(), MemoryData()
    leader = Leader(data, clock)
    await leader.lease.renew()
    serving = asyncio.create_task(leader.requests.serve())
    asking = asyncio.create_task(standby(data, clock).forward("acknowledge", {"incident": "i"}))
    await clock.advance(0.5)
    assert asking.done()
    assert asking.result() == Answer(200, {"done": "acknowledge"}, {"X-By": "leader"})
    assert leader.performed == [("acknowledge", {"incident": "i"})]
    assert data.forwarded == {}  # collected: nothing left behind
    serving.cancel()


async def test_a_command_no_leader_answers_is_withdrawn_and_never_done() -> None:
    clock, data = ManualClock(), MemoryData()
    asking = asyncio.create_task(standby(data, clock).forward("createSilence", {"silence": {}}))
    await clock.advance(WAIT)
    answer = asking.result()
    assert (answer.status, answer.headers) == (503, {"Retry-After": "5"})
    assert "nothing was done" in answer.body["error"]
    leader = Leader(data, clock)  # a leader comes later: the command is not there for it
    await leader.lease.renew()
    serving = asyncio.create_task(leader.requests.serve())
    await clock.advance(1.0)
    assert leader.performed == []
    serving.cancel()


async def test_alerts_no_leader_answers_are_kept_for_the_next_leader() -> None:
    clock, data = ManualClock(), MemoryData()
    assert "intake" in LASTING
    asking = asyncio.create_task(standby(data, clock).forward("intake", {"alerts": []}))
    await clock.advance(WAIT)
    answer = asking.result()
    assert answer.status == 202
    assert "kept in the store" in answer.body["reason"]
    leader = Leader(data, clock)
    await leader.lease.renew()
    serving = asyncio.create_task(leader.requests.serve())
    await clock.advance(0.5)
    assert leader.performed == [("intake", {"alerts": []})]
    serving.cancel()


async def test_a_request_taken_but_not_answered_in_time_may_have_taken_effect() -> None:
    clock, data = ManualClock(), MemoryData()
    asking = asyncio.create_task(standby(data, clock).forward("runJob", {"job": "backup"}))
    await clock.quiet()
    (taken,) = await MemoryStore(data).take_forwarded()  # a leader took it, then stalled
    await clock.advance(2 * WAIT)
    answer = asking.result()
    assert answer.status == 504
    assert "may have taken effect" in answer.body["error"]
    assert taken.operation == "runJob"


async def test_a_replica_that_does_not_lead_takes_nothing() -> None:
    clock, data = ManualClock(), MemoryData()
    leader, other = Leader(data, clock, "a"), Leader(data, clock, "b")
    await leader.lease.renew()
    await other.lease.renew()  # b stands by
    serving = asyncio.create_task(other.requests.serve())
    asking = asyncio.create_task(standby(data, clock).forward("resolve", {"incident": "i"}))
    await clock.advance(WAIT)
    assert asking.result().status == 503
    assert other.performed == []
    serving.cancel()


async def test_a_failing_act_answers_500_and_the_leader_goes_on() -> None:
    clock, data = ManualClock(), MemoryData()
    leader = Leader(data, clock)
    await leader.lease.renew()
    serving = asyncio.create_task(leader.requests.serve())
    asker = standby(data, clock)
    broken = asyncio.create_task(asker.forward("broken", {}))
    fine = asyncio.create_task(asker.forward("runCheck", {"check": "web"}))
    await clock.advance(0.5)
    assert broken.result() == Answer.error(500, "internal error")
    assert fine.result().status == 200
    serving.cancel()


async def test_a_standby_that_cannot_reach_the_store_says_nothing_was_done() -> None:
    clock, data = ManualClock(), MemoryData()
    asker = standby(data, clock)

    async def down(*args: object) -> int:
        raise OSError("connection refused")

    asker.store.forward = down  # type: ignore[method-assign]
    answer = await asker.forward("acknowledge", {})
    assert answer.status == 503
    assert "cannot reach the store" in answer.body["error"]


def test_every_act_a_route_names_exists_and_every_act_has_a_route() -> None:
    named = {op.act for op in OPERATIONS if op.act}
    assert named == set(ACTS)
    assert set(LASTING) <= named


async def test_an_act_this_replica_does_not_know_is_answered_400() -> None:
    """A standby of another version may hand over an act the leader lacks."""
    from daemon.api.acts import carry_out

    answer = await carry_out(None, "renamedLater", {})  # type: ignore[arg-type]
    assert answer == Answer.error(400, "this replica does not know the act 'renamedLater'")
