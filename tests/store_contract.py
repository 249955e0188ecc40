"""The behaviour every `Store` implementation must share, whatever its backend.

A backend's test module subclasses `StoreContract` as `Test<Backend>Store` and provides two
fixtures; pytest then collects every contract test under that class:

- `store`: an opened store on empty storage, closed after the test;
- `reopen`: an async callable returning a *new*, opened store on the same storage, as a
  restarted daemon would get (the fixture closes what it opened).

A base class rather than `from ... import *`: no star import, and the fixtures a backend must
provide live visibly on its test class. Nothing here may depend on a particular backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from daemon.models import Incident, IncidentStatus, TimelineEntry
from daemon.store import Store

T0 = 1_800_000_000.0


Reopen = Callable[[], Awaitable[Store]]


def make_incident(
    id: str = "inc-1",
    *,
    rule: str = "high_error_rate",
    opened_at: float = T0,
    timeline: list[TimelineEntry] | None = None,
    trigger: dict[str, Any] | None = None,
) -> Incident:
    return Incident(
        id=id,
        rule=rule,
        check="error_rate",
        severity="critical",
        summary=f"{rule} firing",
        opened_at=opened_at,
        trigger=trigger if trigger is not None else {"error_ratio": 0.07, "threshold": 0.05},
        timeline=timeline if timeline is not None else [],
    )


# Nested JSON with the awkward cases: unicode, escapes, nulls, booleans, floats, empty values.
RICH_TRIGGER: dict[str, Any] = {
    "value": 0.0731,
    "threshold": 0.05,
    "op": ">",
    "labels": {"service": "api", "région": "eu-west-🇫🇷", "quote": 'a "b" \\ c\n'},
    "window": [1.5, 2, None, True, False, "x"],
    "nested": {"a": {"b": {"c": []}}, "empty": {}},
    "big": 12345678901234567,
}


class StoreContract:
    """Every test runs against the `store` (and `reopen`) fixtures of the subclass."""

    # -- incidents and timelines -------------------------------------------------------------

    async def test_round_trip_incident_with_timeline(self, store: Store) -> None:
        incident = make_incident(
            trigger=RICH_TRIGGER,
            timeline=[
                TimelineEntry(T0, "opened", "error rate 7.3% > 5% for 5m", {"value": 0.0731}),
                TimelineEntry(T0 + 1, "note", "ünïcødé ✓ — 日本語", {"deep": RICH_TRIGGER}),
                TimelineEntry(T0 + 2, "empty", ""),
            ],
        )
        await store.create_incident(incident)
        assert await store.get_incident("inc-1") == incident

    async def test_create_incident_without_timeline(self, store: Store) -> None:
        incident = make_incident()
        await store.create_incident(incident)
        got = await store.get_incident("inc-1")
        assert got == incident
        assert got is not None
        assert got.is_open
        assert got.resolved_at is None
        assert got.timeline == []

    async def test_get_unknown_incident_is_none(self, store: Store) -> None:
        assert await store.get_incident("nope") is None

    async def test_duplicate_incident_is_rejected_and_changes_nothing(self, store: Store) -> None:
        first = make_incident(timeline=[TimelineEntry(T0, "opened", "first")])
        await store.create_incident(first)
        again = make_incident(rule="other", timeline=[TimelineEntry(T0, "opened", "second")])
        with pytest.raises(ValueError, match="inc-1"):
            await store.create_incident(again)
        assert await store.get_incident("inc-1") == first

    async def test_append_keeps_insertion_order(self, store: Store) -> None:
        await store.create_incident(make_incident(timeline=[TimelineEntry(T0, "opened", "0")]))
        # Timestamps out of order on purpose: the timeline is the order of writes, not of ts.
        for i, ts in enumerate([T0 + 5, T0 + 3, T0 + 3, T0 + 9], start=1):
            await store.append_timeline("inc-1", TimelineEntry(ts, "step", str(i), {"i": i}))
        got = await store.get_incident("inc-1")
        assert got is not None
        assert [e.message for e in got.timeline] == ["0", "1", "2", "3", "4"]
        assert got.timeline[2] == TimelineEntry(T0 + 3, "step", "2", {"i": 2})

    async def test_timelines_stay_with_their_incident(self, store: Store) -> None:
        await store.create_incident(make_incident("a"))
        await store.create_incident(make_incident("b"))
        await store.append_timeline("a", TimelineEntry(T0, "x", "for a"))
        await store.append_timeline("b", TimelineEntry(T0, "x", "for b"))
        a, b = await store.get_incident("a"), await store.get_incident("b")
        assert a is not None
        assert b is not None
        assert [e.message for e in a.timeline] == ["for a"]
        assert [e.message for e in b.timeline] == ["for b"]

    async def test_append_to_unknown_incident_raises(self, store: Store) -> None:
        with pytest.raises(KeyError):
            await store.append_timeline("nope", TimelineEntry(T0, "x", "y"))

    async def test_concurrent_writes_all_land(self, store: Store) -> None:
        await store.create_incident(make_incident())
        await asyncio.gather(
            *(
                store.append_timeline("inc-1", TimelineEntry(T0 + i, "s", str(i)))
                for i in range(50)
            ),
            *(
                store.create_incident(
                    make_incident(f"c{i}", timeline=[TimelineEntry(T0, "opened", f"c{i}")])
                )
                for i in range(20)
            ),
            *(store.record_action("r", "restart", T0 + i, "ok") for i in range(30)),
        )
        got = await store.get_incident("inc-1")
        assert got is not None
        assert sorted(int(e.message) for e in got.timeline) == list(range(50))
        assert len(await store.open_incidents()) == 21
        assert await store.count_actions(T0) == 30

    async def test_cancelled_writes_leave_the_store_usable(self, store: Store) -> None:
        await store.create_incident(make_incident())
        for round in range(40):
            tasks = [
                asyncio.ensure_future(store.append_timeline("inc-1", TimelineEntry(T0, "k", "m")))
                for _ in range(3)
            ]
            # Cancel at a different point of the write each round.
            for _ in range(round % 5):
                await asyncio.sleep(0)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await store.record_action("r", "restart", T0 + round, "ok")
        assert await store.count_actions(T0) == 40
        got = await store.get_incident("inc-1")
        assert got is not None
        assert all(e == TimelineEntry(T0, "k", "m") for e in got.timeline)

    # -- resolve -----------------------------------------------------------------------------

    async def test_resolve(self, store: Store) -> None:
        await store.create_incident(make_incident(timeline=[TimelineEntry(T0, "opened", "o")]))
        await store.resolve_incident("inc-1", T0 + 600)
        got = await store.get_incident("inc-1")
        assert got is not None
        assert got.status is IncidentStatus.RESOLVED
        assert not got.is_open
        assert got.resolved_at == T0 + 600
        assert [e.kind for e in got.timeline] == ["opened"]

    async def test_resolve_twice_keeps_first_time(self, store: Store) -> None:
        await store.create_incident(make_incident())
        await store.resolve_incident("inc-1", T0 + 10)
        await store.resolve_incident("inc-1", T0 + 20)
        got = await store.get_incident("inc-1")
        assert got is not None
        assert got.resolved_at == T0 + 10

    async def test_resolve_unknown_incident_raises(self, store: Store) -> None:
        with pytest.raises(KeyError):
            await store.resolve_incident("nope", T0)

    # -- listing -----------------------------------------------------------------------------

    async def _three(self, store: Store) -> None:
        await store.create_incident(make_incident("old", rule="cpu", opened_at=T0))
        await store.create_incident(
            make_incident(
                "mid", rule="errors", opened_at=T0 + 10, timeline=[TimelineEntry(T0, "o", "")]
            )
        )
        await store.create_incident(make_incident("new", rule="cpu", opened_at=T0 + 20))
        await store.resolve_incident("old", T0 + 30)

    async def test_list_newest_first_without_timelines(self, store: Store) -> None:
        await self._three(store)
        got = await store.list_incidents()
        assert [i.id for i in got] == ["new", "mid", "old"]
        assert all(i.timeline == [] for i in got)
        assert got[2].status is IncidentStatus.RESOLVED
        assert got[2].resolved_at == T0 + 30
        assert got[1].trigger == make_incident().trigger

    async def test_list_filters(self, store: Store) -> None:
        await self._three(store)
        ids = [i.id for i in await store.list_incidents(status=IncidentStatus.OPEN)]
        assert ids == ["new", "mid"]
        ids = [i.id for i in await store.list_incidents(status=IncidentStatus.RESOLVED)]
        assert ids == ["old"]
        assert [i.id for i in await store.list_incidents(rule="cpu")] == ["new", "old"]
        ids = [i.id for i in await store.list_incidents(status=IncidentStatus.OPEN, rule="cpu")]
        assert ids == ["new"]
        assert await store.list_incidents(rule="unknown") == []

    async def test_list_limit(self, store: Store) -> None:
        await self._three(store)
        assert [i.id for i in await store.list_incidents(limit=2)] == ["new", "mid"]
        assert [i.id for i in await store.list_incidents(rule="cpu", limit=1)] == ["new"]
        assert await store.list_incidents(limit=0) == []

    async def test_list_ties_on_opened_at_break_by_id(self, store: Store) -> None:
        for id in ["b", "c", "a"]:
            await store.create_incident(make_incident(id, opened_at=T0))
        assert [i.id for i in await store.list_incidents()] == ["c", "b", "a"]

    async def test_open_incidents_with_timelines(self, store: Store) -> None:
        await self._three(store)
        await store.append_timeline("new", TimelineEntry(T0 + 21, "step", "n1"))
        await store.append_timeline("mid", TimelineEntry(T0 + 22, "step", "m1"))
        got = await store.open_incidents()
        # Oldest first: the order in which they were opened.
        assert [i.id for i in got] == ["mid", "new"]
        assert [e.message for e in got[0].timeline] == ["", "m1"]
        assert [e.message for e in got[1].timeline] == ["n1"]
        assert got[0] == await store.get_incident("mid")

    async def test_open_incidents_empty(self, store: Store) -> None:
        assert await store.open_incidents() == []

    # -- action ledger -----------------------------------------------------------------------

    async def test_last_action_for_cooldown(self, store: Store) -> None:
        assert await store.last_action("errors", "rollback") is None
        await store.record_action("errors", "rollback", T0 + 50, "ok")
        # Recorded out of order, and failed: the latest run counts, whatever its outcome.
        await store.record_action("errors", "rollback", T0 + 90, "failed")
        await store.record_action("errors", "rollback", T0 + 70, "ok")
        await store.record_action("errors", "page", T0 + 500, "ok")
        await store.record_action("cpu", "rollback", T0 + 600, "ok")
        assert await store.last_action("errors", "rollback") == T0 + 90
        assert await store.last_action("errors", "page") == T0 + 500
        assert await store.last_action("cpu", "rollback") == T0 + 600
        assert await store.last_action("cpu", "page") is None

    async def test_count_actions_for_budget(self, store: Store) -> None:
        assert await store.count_actions(T0) == 0
        await store.record_action("errors", "rollback", T0, "ok")
        await store.record_action("cpu", "scale", T0 + 10, "failed")
        await store.record_action("errors", "page", T0 + 20, "ok")
        await store.record_action("disk", "page", T0 + 30, "ok")
        assert await store.count_actions(T0) == 4
        # `since` is inclusive.
        assert await store.count_actions(T0 + 10) == 3
        assert await store.count_actions(T0 + 10.5) == 2
        assert await store.count_actions(T0 + 31) == 0
        assert await store.count_actions(T0, exclude=frozenset({"page"})) == 2
        assert await store.count_actions(T0, exclude=frozenset({"page", "scale"})) == 1
        assert await store.count_actions(T0, exclude=frozenset({"unknown"})) == 4
        assert await store.count_actions(T0 + 10, exclude=frozenset({"page"})) == 1

    # -- durability --------------------------------------------------------------------------

    async def test_survives_restart(self, store: Store, reopen: Reopen) -> None:
        still_open = make_incident(
            "open", trigger=RICH_TRIGGER, timeline=[TimelineEntry(T0, "opened", "ünï")]
        )
        await store.create_incident(still_open)
        await store.append_timeline("open", TimelineEntry(T0 + 1, "action", "rollback", {"n": 1}))
        await store.create_incident(make_incident("done", opened_at=T0 - 100))
        await store.resolve_incident("done", T0 - 50)
        await store.record_action("errors", "rollback", T0 + 1, "ok")
        await store.record_action("errors", "page", T0 + 2, "ok")
        await store.close()

        restarted = await reopen()
        still_open.timeline.append(TimelineEntry(T0 + 1, "action", "rollback", {"n": 1}))
        assert await restarted.open_incidents() == [still_open]
        done = await restarted.get_incident("done")
        assert done is not None
        assert done.resolved_at == T0 - 50
        assert [i.id for i in await restarted.list_incidents()] == ["open", "done"]
        assert await restarted.last_action("errors", "rollback") == T0 + 1
        assert await restarted.count_actions(T0, exclude=frozenset({"page"})) == 1
        # And it keeps working after the restart.
        await restarted.append_timeline("open", TimelineEntry(T0 + 3, "note", "after"))
        got = await restarted.get_incident("open")
        assert got is not None
        assert [e.message for e in got.timeline] == ["ünï", "rollback", "after"]

    # -- retention ---------------------------------------------------------------------------

    async def test_prune(self, store: Store) -> None:
        cutoff = T0 + 1000
        await store.create_incident(
            make_incident("resolved-old", timeline=[TimelineEntry(T0, "opened", "x")])
        )
        await store.append_timeline("resolved-old", TimelineEntry(T0 + 1, "step", "y"))
        await store.resolve_incident("resolved-old", cutoff - 1)
        await store.create_incident(make_incident("resolved-at-cutoff"))
        await store.resolve_incident("resolved-at-cutoff", cutoff)
        await store.create_incident(
            make_incident("open-old", opened_at=T0 - 10**6, timeline=[TimelineEntry(T0, "o", "")])
        )
        await store.record_action("r", "rollback", cutoff - 1, "ok")
        await store.record_action("r", "rollback", cutoff - 2, "ok")
        await store.record_action("r", "page", cutoff, "ok")

        assert tuple(await store.prune(cutoff)) == (1, 2)

        assert await store.get_incident("resolved-old") is None
        assert await store.get_incident("resolved-at-cutoff") is not None
        open_old = await store.get_incident("open-old")
        assert open_old is not None
        assert len(open_old.timeline) == 1
        assert await store.last_action("r", "rollback") is None
        assert await store.last_action("r", "page") == cutoff
        assert await store.count_actions(0.0) == 1
        assert tuple(await store.prune(cutoff)) == (0, 0)
        # The id of a pruned incident is free again, with an empty timeline.
        await store.create_incident(make_incident("resolved-old"))
        reused = await store.get_incident("resolved-old")
        assert reused is not None
        assert reused.timeline == []
