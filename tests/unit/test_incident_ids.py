"""Incident ids come from the rule and the episode's start alone: two replicas opening the same
episode name it alike (it is the PagerDuty dedup_key), and a rule's next episode never reuses
one, also after a restart."""

from __future__ import annotations

from daemon.core.clock import ManualClock
from daemon.engine.incidents import new_incident_id
from tests.memory_store import MemoryData
from tests.world import RULE, make_world


def test_the_id_is_the_rule_and_the_start() -> None:
    assert new_incident_id(1_800_000_000_000, "errors") == new_incident_id(
        1_800_000_000_000, "errors"
    )
    assert new_incident_id(1_800_000_000_000, "errors") != new_incident_id(
        1_800_000_000_000, "latency"
    )
    assert new_incident_id(1_800_000_000_000, "errors").startswith("inc-1a3185c5000-")


async def test_two_replicas_name_the_same_episode_alike() -> None:
    ids = []
    for _ in range(2):
        w = make_world({"errors": RULE}, clock=ManualClock())
        for _ in range(5):
            await w.see(0.5)
        ids.append(w.opened[0].id)
    assert ids[0] == ids[1]


async def test_an_episode_starting_as_the_last_ended_gets_its_own_id_after_a_restart() -> None:
    data, clock = MemoryData(), ManualClock()
    first = make_world({"errors": RULE}, data=data, clock=clock)
    for _ in range(5):
        await first.see(0.5)
    await first.engine.resolve_by_operator(first.opened[0].id, "ana", "")
    # A restart on a clock that reads the same times again: the same start, a new episode.
    second = make_world({"errors": RULE}, data=data, clock=ManualClock())
    for _ in range(5):
        await second.see(0.5)
    assert [len(w.opened) for w in (first, second)] == [1, 1]
    assert first.opened[0].id != second.opened[0].id
