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

from daemon.core.models import Incident, IncidentStatus, Step, TimelineEntry
from daemon.store.protocol import (
    ActionRecord,
    Claimed,
    Deploy,
    DeployEntry,
    Fenced,
    Forwarded,
    JobRun,
    OutboxItem,
    Store,
)

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


def make_deploy(
    id: str = "dep-1",
    *,
    started_at: float = T0,
    status: str = "watching",
    baseline: dict[str, float | None] | None = None,
    data: dict[str, Any] | None = None,
    timeline: list[DeployEntry] | None = None,
) -> Deploy:
    return Deploy(
        id=id,
        version="v1.2.3",
        environment="production",
        kind="hotfix",
        source="ci",
        started_at=started_at,
        commit="4f2a9c1",
        by="ana",
        previous="v1.2.2",
        baseline=baseline if baseline is not None else {"traffic.error_ratio": 0.004},
        data=data if data is not None else {},
        status=status,
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


async def hold_batch(store: Store) -> tuple[asyncio.Future[None], asyncio.Event]:
    """A task inside `store.batch()`, having written ns/batch = 1, that keeps the batch open
    until the event is set."""
    in_batch, release = asyncio.Event(), asyncio.Event()

    async def holding() -> None:
        async with store.batch():
            await store.put_value("ns", "batch", 1)
            in_batch.set()
            await release.wait()

    holder = asyncio.ensure_future(holding())
    await in_batch.wait()
    return holder, release


async def assert_twenty_writers_durable(reopen: Reopen) -> None:
    """After a restart: writer i's incident inc-i with its one entry "i", and ns/k<i> = i."""
    restarted = await reopen()
    got = await restarted.open_incidents()
    assert [(i.id, [e.message for e in i.timeline]) for i in got] == [
        (f"inc-{i}", [str(i)]) for i in range(20)
    ]
    assert await restarted.values("ns") == {f"k{i}": i for i in range(20)}


async def act(
    store: Store,
    rule: str,
    remediation: str,
    ts: float,
    outcome: str | None = "ok",
    incident_id: str = "inc-1",
) -> int:
    """One action in the ledger, begun and ended; with outcome None it stays running."""
    action_id = await store.begin_action(incident_id, rule, remediation, ts)
    if outcome is not None:
        await store.end_action(action_id, outcome)
    return action_id


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
            *(store.begin_action("inc-1", "r", "restart", T0 + i) for i in range(30)),
            *(store.put_value("ns", str(i), {"i": i}) for i in range(20)),
            *(store.outbox_add("inc-1", "page", "execute", T0 + i) for i in range(20)),
        )
        got = await store.get_incident("inc-1")
        assert got is not None
        assert sorted(int(e.message) for e in got.timeline) == list(range(50))
        assert len(await store.open_incidents()) == 21
        assert await store.count_actions(T0) == 30
        running = await store.running_actions()
        assert len({a.id for a in running}) == 30
        await asyncio.gather(*(store.end_action(a.id, "ok") for a in running))
        assert await store.running_actions() == []
        assert [await store.get_value("ns", str(i)) for i in range(20)] == [
            {"i": i} for i in range(20)
        ]
        assert [i.next_at for i in await store.outbox_due(T0 + 100)] == [T0 + i for i in range(20)]

    async def test_cancelled_writes_leave_the_store_usable(self, store: Store) -> None:
        await store.create_incident(make_incident())
        for round in range(40):
            writes = [
                store.append_timeline("inc-1", TimelineEntry(T0, "k", "m")),
                store.begin_action("inc-1", "r", "cancelled", T0),
                store.put_value("ns", "cancelled", {"round": round}),
                store.outbox_add("inc-1", "cancelled", "execute", T0),
            ]
            tasks = [asyncio.ensure_future(w) for w in writes]
            # Cancel at a different point of the write each round.
            for _ in range(round % 5):
                await asyncio.sleep(0)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            action_id = await store.begin_action("inc-1", "r", "restart", T0 + round)
            await store.end_action(action_id, "ok")
            await store.put_value("ns", "ok", round)
        # A cancelled write landed whole or not at all, and the ones after it all landed.
        assert await store.count_actions(T0, only="restart") == 40
        assert {a.remediation for a in await store.running_actions()} <= {"cancelled"}
        assert await store.get_value("ns", "ok") == 39
        assert await store.get_value("ns", "cancelled") in [
            None,
            *({"round": i} for i in range(40)),
        ]
        assert all(i.remediation == "cancelled" for i in await store.outbox_due(T0))
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

    async def test_the_first_acknowledgement_is_kept(self, store: Store) -> None:
        await store.create_incident(make_incident())
        await store.acknowledge_incident("inc-1", "ana", T0 + 1)
        await store.acknowledge_incident("inc-1", "bo", T0 + 2)  # changes nothing
        got = await store.get_incident("inc-1")
        assert got is not None
        assert (got.acknowledged_by, got.acknowledged_at) == ("ana", T0 + 1)
        (listed,) = await store.list_incidents()
        (still_open,) = await store.open_incidents()
        assert listed.acknowledged_by == still_open.acknowledged_by == "ana"

    async def test_who_closed_an_incident_is_kept(self, store: Store) -> None:
        await store.create_incident(make_incident("closed"))
        await store.create_incident(make_incident("cleared"))
        await store.resolve_incident("closed", T0 + 1, by="ana")
        await store.resolve_incident("closed", T0 + 2, by="bo")  # changes nothing
        await store.resolve_incident("cleared", T0 + 3)
        closed, cleared = await store.get_incident("closed"), await store.get_incident("cleared")
        assert closed is not None
        assert cleared is not None
        assert (closed.resolved_by, closed.resolved_at) == ("ana", T0 + 1)
        assert cleared.resolved_by is None
        listed = {i.id: i.resolved_by for i in await store.list_incidents()}
        assert listed == {"closed": "ana", "cleared": None}

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

    async def test_entries_of_some_kinds_for_many_incidents_in_one_read(self, store: Store) -> None:
        opened = TimelineEntry(T0, Step.OPENED, "a0", {"value": 1})
        await store.create_incident(make_incident("inc-a", timeline=[opened]))
        for name in ("inc-b", "inc-c"):
            await store.create_incident(make_incident(name))
        entries = [
            ("inc-a", Step.UPDATE, "a1"),
            ("inc-b", Step.ACTION, "b1"),
            ("inc-a", Step.ACTION, "a2"),
            ("inc-b", Step.RESOLVED, "b2"),
            ("inc-a", Step.RESOLVED, "a3"),
            ("inc-c", Step.VERIFY, "c1"),
            ("inc-a", Step.UPDATE, "a4"),
        ]
        for index, (incident_id, kind, message) in enumerate(entries):
            data = {"n": index, "deep": RICH_TRIGGER}
            await store.append_timeline(incident_id, TimelineEntry(T0 + index, kind, message, data))
        kinds = {Step.OPENED, Step.UPDATE, "resolved"}  # members or their text
        found = await store.incident_entries(["inc-a", "inc-b", "inc-c", "nope"], kinds)
        assert {k: [e.message for e in v] for k, v in found.items()} == {
            "inc-a": ["a0", "a1", "a3", "a4"],  # oldest first, the timeline it was created with too
            "inc-b": ["b2"],
        }
        assert found["inc-a"][1] == TimelineEntry(
            T0, Step.UPDATE, "a1", {"n": 0, "deep": RICH_TRIGGER}
        )
        assert found["inc-a"][0] == opened
        assert await store.incident_entries([], kinds) == {}
        assert await store.incident_entries(["inc-a"], set()) == {}
        assert list(await store.incident_entries(["inc-b"], kinds)) == ["inc-b"]
        assert await store.incident_entries(["inc-c"], kinds) == {}

    async def test_open_incidents_empty(self, store: Store) -> None:
        assert await store.open_incidents() == []

    async def test_open_incidents_ties_on_opened_at_break_by_id(self, store: Store) -> None:
        for id in ["b", "c", "a"]:
            await store.create_incident(make_incident(id, opened_at=T0))
        assert [i.id for i in await store.open_incidents()] == ["a", "b", "c"]

    # -- action ledger -----------------------------------------------------------------------

    async def test_a_begun_action_is_running_until_ended(self, store: Store) -> None:
        assert await store.running_actions() == []
        a = await store.begin_action("inc-1", "errors", "rollback", T0)
        b = await store.begin_action("inc-2", "cpu", "scale", T0 + 5)
        assert a != b
        assert await store.running_actions() == [
            ActionRecord(a, "inc-1", "errors", "rollback", T0, "running"),
            ActionRecord(b, "inc-2", "cpu", "scale", T0 + 5, "running"),
        ]
        await store.end_action(a, "ok")
        assert [r.id for r in await store.running_actions()] == [b]
        await store.end_action(b, "failed")
        assert await store.running_actions() == []

    async def test_running_actions_oldest_first(self, store: Store) -> None:
        late = await act(store, "r", "page", T0 + 10, None)
        early = await act(store, "r", "rollback", T0, None)
        tie = await act(store, "r", "scale", T0, None)
        await act(store, "r", "restart", T0 - 10)
        assert [r.id for r in await store.running_actions()] == [early, tie, late]

    async def test_end_unknown_action_raises(self, store: Store) -> None:
        with pytest.raises(KeyError):
            await store.end_action(12345, "ok")
        assert await store.running_actions() == []

    async def test_an_ended_action_stays_ended(self, store: Store) -> None:
        a = await act(store, "r", "rollback", T0, "ok")
        # A second end is harmless (the first outcome stays), and "running" is no outcome.
        await store.end_action(a, "interrupted")
        with pytest.raises(ValueError, match="running"):
            await store.end_action(a, "running")
        assert await store.running_actions() == []
        assert await store.last_action("r", "rollback") == T0

    async def test_last_action_for_cooldown(self, store: Store) -> None:
        assert await store.last_action("errors", "rollback") is None
        await act(store, "errors", "rollback", T0 + 50, "ok")
        # Begun out of order, and failed: the latest begin counts, whatever its outcome.
        await act(store, "errors", "rollback", T0 + 90, "failed")
        await act(store, "errors", "rollback", T0 + 70, "ok")
        # Still running: it may have acted already, so it counts too.
        await act(store, "errors", "page", T0 + 500, None)
        await act(store, "cpu", "rollback", T0 + 600, "ok")
        assert await store.last_action("errors", "rollback") == T0 + 90
        assert await store.last_action("errors", "page") == T0 + 500
        assert await store.last_action("cpu", "rollback") == T0 + 600
        assert await store.last_action("cpu", "page") is None

    async def test_count_actions_for_budget(self, store: Store) -> None:
        assert await store.count_actions(T0) == 0
        await act(store, "errors", "rollback", T0, "ok")
        await act(store, "cpu", "scale", T0 + 10, "failed")
        await act(store, "errors", "page", T0 + 20, "ok")
        # Running, and later interrupted: both count, as either may have acted.
        await act(store, "disk", "page", T0 + 30, None)
        assert await store.count_actions(T0) == 4
        # `since` is inclusive.
        assert await store.count_actions(T0 + 10) == 3
        assert await store.count_actions(T0 + 10.5) == 2
        assert await store.count_actions(T0 + 31) == 0
        assert await store.count_actions(T0, exclude=frozenset({"page"})) == 2
        assert await store.count_actions(T0, exclude=frozenset({"page", "scale"})) == 1
        assert await store.count_actions(T0, exclude=frozenset({"unknown"})) == 4
        assert await store.count_actions(T0 + 10, exclude=frozenset({"page"})) == 1

    async def test_count_actions_only_one_remediation(self, store: Store) -> None:
        await act(store, "errors", "rollback", T0, "ok")
        await act(store, "errors", "page", T0 + 20, "failed")
        await act(store, "disk", "page", T0 + 30, None)
        await act(store, "cpu", "page", T0 + 40, "interrupted")
        # Whatever the rule, whatever the outcome.
        assert await store.count_actions(T0, only="page") == 3
        assert await store.count_actions(T0 + 30, only="page") == 2
        assert await store.count_actions(T0, only="rollback") == 1
        assert await store.count_actions(T0 + 1, only="rollback") == 0
        assert await store.count_actions(T0, only="unknown") == 0
        # Both filters apply.
        assert await store.count_actions(T0, only="page", exclude=frozenset({"page"})) == 0
        assert await store.count_actions(T0, only="page", exclude=frozenset({"rollback"})) == 3

    # -- durability --------------------------------------------------------------------------

    async def test_survives_restart(self, store: Store, reopen: Reopen) -> None:
        still_open = make_incident(
            "open", trigger=RICH_TRIGGER, timeline=[TimelineEntry(T0, "opened", "ünï")]
        )
        await store.create_incident(still_open)
        await store.append_timeline("open", TimelineEntry(T0 + 1, "action", "rollback", {"n": 1}))
        await store.create_incident(make_incident("done", opened_at=T0 - 100))
        await store.resolve_incident("done", T0 - 50)
        await act(store, "errors", "rollback", T0 + 1, "ok")
        await act(store, "errors", "page", T0 + 2, "ok")
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

    async def test_running_actions_survive_restart(self, store: Store, reopen: Reopen) -> None:
        # How a crash is found: begun before the "crash", never ended.
        interrupted = await act(store, "errors", "rollback", T0, None, incident_id="inc-7")
        await act(store, "errors", "page", T0 + 1, "ok")
        await store.close()

        restarted = await reopen()
        assert await restarted.running_actions() == [
            ActionRecord(interrupted, "inc-7", "errors", "rollback", T0, "running")
        ]
        assert await restarted.last_action("errors", "rollback") == T0
        await restarted.end_action(interrupted, "interrupted")
        assert await restarted.running_actions() == []
        # Interrupted still counts against cooldown and budget.
        assert await restarted.count_actions(T0) == 2
        # New ids do not collide with the old ones.
        again = await restarted.begin_action("inc-8", "errors", "rollback", T0 + 2)
        assert again != interrupted
        assert [a.id for a in await restarted.running_actions()] == [again]

    # -- job runs ----------------------------------------------------------------------------

    async def test_a_job_run_from_begin_to_end(self, store: Store) -> None:
        run_id = await store.add_job_run("backup", "schedule", T0, T0 + 2)
        assert await store.unfinished_job_runs() == [
            JobRun(run_id, "backup", "schedule", T0, T0 + 2)
        ]
        report = {"bytes": 1234, "key": "backup-ü.sql.gz", "tables": {"User": 10}}
        await store.finish_job_run(run_id, T0 + 9, "succeeded", "uploaded", report)
        await store.finish_job_run(run_id, T0 + 99, "failed", "again", {})  # keeps the first
        (run,) = await store.job_runs("backup")
        assert run == JobRun(
            run_id, "backup", "schedule", T0, T0 + 2, T0 + 9, "succeeded", "uploaded", report
        )
        assert await store.unfinished_job_runs() == []
        with pytest.raises(KeyError):
            await store.finish_job_run(run_id + 100, T0, "failed", "", {})
        with pytest.raises(ValueError, match="limit"):
            await store.job_runs("backup", limit=-1)

    async def test_job_runs_newest_first_and_the_latest_of_each_job(self, store: Store) -> None:
        ids = []
        for job, outcome in [("a", "succeeded"), ("b", "failed"), ("a", "failed"), ("a", None)]:
            ids.append(await store.add_job_run(job, "schedule", T0 + len(ids), T0 + len(ids)))
            if outcome is not None:
                await store.finish_job_run(ids[-1], T0 + 10, outcome, "", {})
        assert [r.id for r in await store.job_runs("a")] == [ids[3], ids[2], ids[0]]
        assert [r.id for r in await store.job_runs("a", limit=1)] == [ids[3]]
        latest = await store.latest_job_runs()
        assert {job: r.id for job, r in latest.items()} == {"a": ids[3], "b": ids[1]}
        succeeded = await store.latest_job_runs("succeeded")
        assert {job: r.id for job, r in succeeded.items()} == {"a": ids[0]}
        # A run that never started (missed) has no start.
        missed = await store.add_job_run("c", "schedule", T0, None)
        await store.finish_job_run(missed, T0 + 5, "missed", "the daemon was down", {})
        (run,) = await store.job_runs("c")
        assert (run.started_at, run.outcome) == (None, "missed")

    async def test_job_runs_survive_restart_unfinished_ones_too(
        self, store: Store, reopen: Reopen
    ) -> None:
        done = await store.add_job_run("backup", "schedule", T0, T0)
        await store.finish_job_run(done, T0 + 5, "succeeded", "ok", {"bytes": 5})
        cut_short = await store.add_job_run("backup", "manual", T0 + 10, T0 + 10)
        await store.close()
        restarted = await reopen()
        assert [r.id for r in await restarted.unfinished_job_runs()] == [cut_short]
        assert (await restarted.latest_job_runs("succeeded"))["backup"].data == {"bytes": 5}
        again = await restarted.add_job_run("backup", "schedule", T0 + 20, T0 + 20)
        assert again not in (done, cut_short)

    async def test_prune_keeps_each_jobs_newest_run_and_unfinished_ones(self, store: Store) -> None:
        cutoff = T0 + 1000
        old = await store.add_job_run("a", "schedule", T0, T0)
        await store.finish_job_run(old, T0 + 1, "succeeded", "", {})
        newest_a = await store.add_job_run("a", "schedule", T0 + 2, T0 + 2)
        await store.finish_job_run(newest_a, T0 + 3, "failed", "", {})
        running = await store.add_job_run("b", "schedule", T0, T0)
        only_b = await store.add_job_run("b", "schedule", T0 + 1, T0 + 1)
        await store.finish_job_run(only_b, T0 + 2, "succeeded", "", {})
        recent = await store.add_job_run("c", "schedule", cutoff, cutoff)
        await store.finish_job_run(recent, cutoff, "succeeded", "", {})

        assert (await store.prune(cutoff)).job_runs == 1
        assert [r.id for r in await store.job_runs("a")] == [newest_a]
        assert [r.id for r in await store.job_runs("b")] == [only_b, running]
        assert [r.id for r in await store.job_runs("c")] == [recent]

    # -- the leader's lease: no clock is moved, so these hold on a database's own clock too ------

    async def test_the_first_claim_leads_and_others_see_who_does(self, store: Store) -> None:
        first = await store.claim_lease("a", 10.0)
        assert (first.holder, first.epoch) == ("a", 1)
        assert 0.0 < first.remaining <= 10.0
        other = await store.claim_lease("b", 10.0)
        assert (other.holder, other.epoch) == ("a", 1)  # b is told who leads
        renewed = await store.claim_lease("a", 10.0)
        assert (renewed.holder, renewed.epoch) == ("a", 1)  # a renewal keeps the epoch

    async def test_a_lease_released_or_expired_goes_to_the_next_with_a_new_epoch(
        self, store: Store
    ) -> None:
        await store.claim_lease("a", 10.0)
        await store.release_lease("b")  # not b's: changes nothing
        assert (await store.claim_lease("b", 10.0)).holder == "a"
        await store.release_lease("a")
        taken = await store.claim_lease("b", 0.0)  # expires at once
        assert (taken.holder, taken.epoch) == ("b", 2)
        again = await store.claim_lease("a", 10.0)
        assert (again.holder, again.epoch) == ("a", 3)
        # The old holder, back: it is told it lost, and gets no epoch of its own.
        stale = await store.claim_lease("b", 10.0)
        assert (stale.holder, stale.epoch) == ("a", 3)

    async def test_only_the_current_holder_and_epoch_pass_the_fence(self, store: Store) -> None:
        await store.claim_lease("a", 10.0)
        await store.check_epoch("a", 1)
        for holder, epoch in (("a", 2), ("b", 1)):
            with pytest.raises(Fenced):
                await store.check_epoch(holder, epoch)
        await store.release_lease("a")  # expired: a's own epoch no longer passes
        with pytest.raises(Fenced):
            await store.check_epoch("a", 1)
        await store.claim_lease("b", 10.0)
        await store.check_epoch("b", 2)

    async def test_a_fenced_batch_writes_nothing(self, store: Store) -> None:
        await store.claim_lease("a", 0.0)
        await store.claim_lease("b", 10.0)  # b took over: a is fenced

        async def fenced_batch() -> None:
            async with store.batch():
                await store.put_value("ns", "k", 1)
                await store.check_epoch("a", 1)

        with pytest.raises(Fenced):
            await fenced_batch()
        assert await store.get_value("ns", "k") is None

    async def test_the_epoch_survives_a_restart(self, store: Store, reopen: Reopen) -> None:
        await store.claim_lease("a", 0.0)
        await store.claim_lease("b", 0.0)
        await store.close()
        restarted = await reopen()
        lease = await restarted.claim_lease("c", 10.0)
        assert (lease.holder, lease.epoch) == ("c", 3)

    # -- claims: a plan's step begins once per incident ------------------------------------------

    async def test_a_claimed_step_cannot_begin_again_and_a_rolled_back_claim_is_free(
        self, store: Store, reopen: Reopen
    ) -> None:
        first = await store.begin_action("inc-1", "r", "rollback", T0, "do/0")
        with pytest.raises(Claimed):
            await store.begin_action("inc-1", "r", "rollback", T0 + 1, "do/0")
        await store.begin_action("inc-2", "r", "rollback", T0, "do/0")  # another incident
        await store.begin_action("inc-1", "r", "page", T0, None)  # unclaimed: any number
        await store.begin_action("inc-1", "r", "page", T0, None)

        async def rolled_back() -> None:
            async with store.batch():
                await store.begin_action("inc-1", "r", "scale", T0, "escalate/0")
                raise RuntimeError("the batch fails")

        with pytest.raises(RuntimeError):
            await rolled_back()
        await store.close()
        store = await reopen()
        with pytest.raises(Claimed):  # it outlives a restart
            await store.begin_action("inc-1", "r", "rollback", T0 + 2, "do/0")
        await store.begin_action("inc-1", "r", "scale", T0, "escalate/0")  # was rolled back
        assert next(a.id for a in await store.running_actions()) == first

    # -- procedure runs ------------------------------------------------------------------------

    async def test_procedure_runs_are_saved_listed_resumed_and_pruned(
        self, store: Store, reopen: Reopen
    ) -> None:
        def run(run_id: str, started: float, **extra: Any) -> dict[str, Any]:
            doc = {"id": run_id, "procedure": "migrate", "status": "running"}
            return doc | {"started_at": started, "ended_at": None, "steps": []} | extra

        await store.save_procedure_run(run("run-1", T0, params={"version": "v1.2.3 ✓"}))
        await store.save_procedure_run(run("run-2", T0 + 1, procedure="rollback"))
        await store.save_procedure_run(run("run-3", T0 + 2))
        ended = run("run-1", T0, status="succeeded", ended_at=T0 + 5, params={})
        await store.save_procedure_run(ended)  # replaced whole
        await store.close()
        store = await reopen()
        assert await store.get_procedure_run("run-1") == ended
        assert await store.get_procedure_run("nope") is None
        listed = await store.list_procedure_runs()
        assert [r["id"] for r in listed] == ["run-3", "run-2", "run-1"]
        only = await store.list_procedure_runs(procedure="migrate", status="running")
        assert [r["id"] for r in only] == ["run-3"]
        assert [r["id"] for r in await store.list_procedure_runs(limit=1)] == ["run-3"]
        assert [r["id"] for r in await store.unfinished_procedure_runs()] == ["run-2", "run-3"]
        await store.prune(T0 + 10)
        assert await store.get_procedure_run("run-1") is None  # ended before: gone
        assert [r["id"] for r in await store.unfinished_procedure_runs()] == ["run-2", "run-3"]
        with pytest.raises(ValueError, match="limit"):
            await store.list_procedure_runs(limit=-1)

    # -- requests forwarded from a standby to the leader -------------------------------------

    async def test_a_forwarded_request_is_taken_once_answered_once_and_collected_once(
        self, store: Store, reopen: Reopen
    ) -> None:
        args = {"incident": "inc-ü", "by": "ana", "alerts": [{"labels": {"a": "\x00"}}]}
        first = await store.forward("acknowledge", args, T0)
        second = await store.forward("intake", {}, T0 + 1)
        assert await store.collect_answer(first) is None  # nobody answered yet
        await store.close()
        store = await reopen()  # left for the leader: it outlives a restart
        taken = await store.take_forwarded(limit=1)
        assert taken == [Forwarded(first, "acknowledge", args, T0)]
        assert [i.id for i in await store.take_forwarded()] == [second]
        assert await store.take_forwarded() == []  # another replica never gets them again
        assert not await store.withdraw_forwarded(first)  # taken: too late to withdraw
        await store.answer_forwarded(first, {"status": 200, "body": {"ok": "✓"}})
        await store.answer_forwarded(404_404, {"status": 200})  # withdrawn or pruned: nothing
        assert await store.collect_answer(first) == {"status": 200, "body": {"ok": "✓"}}
        assert await store.collect_answer(first) is None  # collected: gone

    async def test_a_request_nobody_took_can_be_withdrawn_and_is_never_taken(
        self, store: Store
    ) -> None:
        item = await store.forward("decide", {"approved": True}, T0)
        assert await store.withdraw_forwarded(item)
        assert not await store.withdraw_forwarded(item)
        assert await store.take_forwarded() == []
        await store.answer_forwarded(item, {"status": 200})  # a late leader: nothing happens
        assert await store.collect_answer(item) is None

    async def test_prune_takes_forwarded_requests_done_with_not_those_taken_and_unanswered(
        self, store: Store
    ) -> None:
        answered = await store.forward("intake", {}, T0)
        working = await store.forward("intake", {}, T0)
        await store.take_forwarded()
        never_taken = await store.forward("intake", {}, T0)
        recent = await store.forward("intake", {}, T0 + 100)
        await store.answer_forwarded(answered, {"status": 200})
        await store.prune(T0 + 10)
        assert not await store.withdraw_forwarded(never_taken)  # pruned
        assert await store.collect_answer(answered) is None  # pruned
        await store.answer_forwarded(working, {"status": 200})  # still there to answer
        assert await store.collect_answer(working) == {"status": 200}
        assert await store.withdraw_forwarded(recent)

    # -- deploys ----------------------------------------------------------------------------

    async def test_a_deploy_round_trips_with_its_timeline(self, store: Store) -> None:
        deploy = make_deploy(
            "dep-1",
            baseline={"traffic.error_ratio": 0.004, "traffic.p95_seconds": None},
            data={"deployment": {"id": "dpl_1", "url": "app-ü.vercel.app"}, "deep": RICH_TRIGGER},
            timeline=[
                DeployEntry(T0, "announced", "Starting deployment of v1.2.3", {"ok": True}),
                DeployEntry(T0 + 1, "baseline", "ünïcødé ✓", {"deep": RICH_TRIGGER}),
            ],
        )
        await store.create_deploy(deploy)
        assert await store.get_deploy("dep-1") == deploy
        assert await store.get_deploy("dep-2") is None
        with pytest.raises(ValueError, match="dep-1"):
            await store.create_deploy(make_deploy("dep-1"))
        await store.append_deploy_timeline("dep-1", DeployEntry(T0 + 2, "completed", "done"))
        got = await store.get_deploy("dep-1")
        assert got is not None
        assert [e.kind for e in got.timeline] == ["announced", "baseline", "completed"]
        with pytest.raises(KeyError):
            await store.append_deploy_timeline("nope", DeployEntry(T0, "note", ""))

    async def test_a_deploy_ends_once(self, store: Store) -> None:
        await store.create_deploy(make_deploy("dep-1"))
        await store.update_deploy("dep-1", status="rolling_back", incident="inc-9")
        got = await store.get_deploy("dep-1")
        assert got is not None
        assert (got.status, got.ended_at, got.incident) == ("rolling_back", None, "inc-9")
        # The incident stays when an update does not give one.
        await store.update_deploy("dep-1", status="rolled_back", ended_at=T0 + 30)
        await store.update_deploy("dep-1", status="completed", ended_at=T0 + 99, incident="x")
        got = await store.get_deploy("dep-1")
        assert got is not None
        assert (got.status, got.ended_at, got.incident) == ("rolled_back", T0 + 30, "inc-9")
        with pytest.raises(KeyError):
            await store.update_deploy("nope", status="completed", ended_at=T0)

    async def test_deploys_newest_first_by_status_without_timelines(self, store: Store) -> None:
        for index, status in enumerate(["completed", "watching", "completed", "rolled_back"]):
            deploy = make_deploy(f"dep-{index}", started_at=T0 + index, status=status)
            deploy.timeline = [DeployEntry(T0, "announced", "x")]
            await store.create_deploy(deploy)
        assert [d.id for d in await store.list_deploys()] == ["dep-3", "dep-2", "dep-1", "dep-0"]
        assert [d.id for d in await store.list_deploys(limit=2)] == ["dep-3", "dep-2"]
        listed = await store.list_deploys(status="completed")
        assert [d.id for d in listed] == ["dep-2", "dep-0"]
        assert all(d.timeline == [] for d in listed)
        assert [d.id for d in await store.list_deploys(status="watching")] == ["dep-1"]
        with pytest.raises(ValueError, match="limit"):
            await store.list_deploys(limit=-1)

    async def test_entries_of_some_kinds_for_many_deploys_in_one_read(self, store: Store) -> None:
        for name in ("dep-a", "dep-b", "dep-c"):
            await store.create_deploy(make_deploy(name))
        entries = [
            ("dep-a", "announced", "a1"),
            ("dep-a", "breach", "a2"),
            ("dep-b", "completed", "b1"),
            ("dep-a", "rolled_back", "a3"),
            ("dep-c", "announced", "c1"),
        ]
        for index, (deploy_id, kind, message) in enumerate(entries):
            data = {"n": index, "deep": RICH_TRIGGER}
            await store.append_deploy_timeline(
                deploy_id, DeployEntry(T0 + index, kind, message, data)
            )
        kinds = {"breach", "rolled_back", "completed"}
        found = await store.deploy_entries(["dep-a", "dep-b", "dep-c", "nope"], kinds)
        assert {k: [e.message for e in v] for k, v in found.items()} == {
            "dep-a": ["a2", "a3"],  # oldest first
            "dep-b": ["b1"],
        }
        assert found["dep-a"][0] == DeployEntry(
            T0 + 1, "breach", "a2", {"n": 1, "deep": RICH_TRIGGER}
        )
        assert await store.deploy_entries([], kinds) == {}
        assert await store.deploy_entries(["dep-a"], set()) == {}
        assert list(await store.deploy_entries(["dep-b"], kinds)) == ["dep-b"]

    async def test_deploys_survive_restart_and_ended_ones_are_pruned(
        self, store: Store, reopen: Reopen
    ) -> None:
        await store.create_deploy(make_deploy("old", started_at=T0))
        await store.append_deploy_timeline("old", DeployEntry(T0, "announced", "old"))
        await store.update_deploy("old", status="completed", ended_at=T0 + 300)
        await store.create_deploy(make_deploy("watched", started_at=T0 + 10))
        await store.close()
        restarted = await reopen()
        assert [d.id for d in await restarted.list_deploys(status="watching")] == ["watched"]
        assert (await restarted.prune(T0 + 1000)).deploys == 1
        assert await restarted.get_deploy("old") is None
        assert [d.id for d in await restarted.list_deploys()] == ["watched"]

    # -- values ------------------------------------------------------------------------------

    async def test_value_round_trip(self, store: Store) -> None:
        assert await store.get_value("breaker", "errors") is None
        await store.put_value("breaker", "errors", RICH_TRIGGER)
        assert await store.get_value("breaker", "errors") == RICH_TRIGGER
        # Falsy values are values, not deletions.
        for value in [0, 0.0, False, "", [], {}, 1.5, "ünï", [None, {"a": None}]]:
            await store.put_value("ns", "k", value)
            assert await store.get_value("ns", "k") == value

    async def test_values_are_copies(self, store: Store) -> None:
        value: dict[str, Any] = {"list": [1, 2], "nested": {"a": 1}}
        await store.put_value("ns", "k", value)
        value["list"].append(3)
        got = await store.get_value("ns", "k")
        assert got == {"list": [1, 2], "nested": {"a": 1}}
        got["nested"]["a"] = 2
        assert await store.get_value("ns", "k") == {"list": [1, 2], "nested": {"a": 1}}

    async def test_value_overwrite_and_delete(self, store: Store) -> None:
        await store.put_value("ns", "k", 1)
        await store.put_value("ns", "k", {"a": [2]})
        assert await store.get_value("ns", "k") == {"a": [2]}
        await store.put_value("ns", "k", None)
        assert await store.get_value("ns", "k") is None
        # Deleting what is not there is fine.
        await store.put_value("ns", "k", None)
        await store.put_value("ns", "never", None)
        assert await store.get_value("ns", "never") is None
        await store.put_value("ns", "k", "back")
        assert await store.get_value("ns", "k") == "back"

    async def test_value_namespaces_are_separate(self, store: Store) -> None:
        await store.put_value("a", "k", 1)
        await store.put_value("b", "k", 2)
        await store.put_value("a", "other", 3)
        assert await store.get_value("a", "k") == 1
        assert await store.get_value("b", "k") == 2
        assert await store.get_value("b", "other") is None
        await store.put_value("a", "k", None)
        assert await store.get_value("a", "k") is None
        assert await store.get_value("b", "k") == 2
        assert await store.get_value("a", "other") == 3

    async def test_values_lists_one_namespace(self, store: Store) -> None:
        await store.put_value("alerts:web", "fp2", {"name": "B"})
        await store.put_value("alerts:web", "fp1", {"name": "A"})
        await store.put_value("alerts:db", "fp1", {"name": "C"})
        await store.put_value("alerts:web", "fp2", None)
        assert await store.values("alerts:web") == {"fp1": {"name": "A"}}
        assert await store.values("nothing") == {}

    async def test_a_value_json_cannot_hold_is_refused(self, store: Store) -> None:
        await store.put_value("ns", "k", [1])
        with pytest.raises(TypeError):
            await store.put_value("ns", "k", {"a": {1, 2}})
        assert await store.get_value("ns", "k") == [1]

    async def test_put_values_writes_and_deletes_several_keys(
        self, store: Store, reopen: Reopen
    ) -> None:
        await store.put_value("alerts:web", "gone", {"n": 0})
        await store.put_value("alerts:db", "other", 1)
        await store.put_values(
            "alerts:web", {f"fp{i}": {"n": i} for i in range(50)} | {"gone": None, "never": None}
        )
        await store.put_values("alerts:web", {"fp0": {"n": "again"}})
        await store.put_values("alerts:web", {})
        await store.close()
        restarted = await reopen()
        assert await restarted.values("alerts:web") == {
            f"fp{i}": {"n": "again" if i == 0 else i} for i in range(50)
        }
        assert await restarted.values("alerts:db") == {"other": 1}

    async def test_put_values_with_a_value_json_cannot_hold_writes_nothing(
        self, store: Store
    ) -> None:
        await store.put_value("ns", "k", 1)
        with pytest.raises(TypeError):
            await store.put_values("ns", {"k": None, "a": 2, "bad": {1, 2}})
        assert await store.values("ns") == {"k": 1}

    async def test_values_survive_restart(self, store: Store, reopen: Reopen) -> None:
        await store.put_value("breaker", "errors", {"open": True, "failures": [T0, T0 + 1]})
        await store.put_value("breaker", "gone", 1)
        await store.put_value("breaker", "gone", None)
        await store.close()
        restarted = await reopen()
        assert await restarted.get_value("breaker", "errors") == {
            "open": True,
            "failures": [T0, T0 + 1],
        }
        assert await restarted.get_value("breaker", "gone") is None

    # -- outbox ------------------------------------------------------------------------------

    async def test_outbox_item_is_due_at_once(self, store: Store) -> None:
        assert await store.outbox_due(T0 + 10**6) == []
        item_id = await store.outbox_add("inc-1", "page", "execute", T0)
        assert await store.outbox_due(T0 - 1) == []
        expected = OutboxItem(item_id, "inc-1", "page", "execute", T0, T0, 0, "")
        assert await store.outbox_due(T0) == [expected]
        assert await store.outbox_due(T0 + 10**6) == [expected]

    async def test_outbox_reschedule(self, store: Store) -> None:
        item_id = await store.outbox_add("inc-1", "page", "resolve", T0)
        await store.outbox_reschedule(item_id, T0 + 60, 1, "503 from the provider")
        assert await store.outbox_due(T0 + 59) == []
        assert await store.outbox_due(T0 + 60) == [
            OutboxItem(item_id, "inc-1", "page", "resolve", T0, T0 + 60, 1, "503 from the provider")
        ]
        await store.outbox_reschedule(item_id, T0 + 180, 2, "timed out")
        (item,) = await store.outbox_due(T0 + 180)
        assert (item.created_at, item.next_at, item.attempts, item.last_error) == (
            T0,
            T0 + 180,
            2,
            "timed out",
        )

    async def test_outbox_finish_is_forever(self, store: Store, reopen: Reopen) -> None:
        delivered = await store.outbox_add("inc-1", "page", "execute", T0)
        given_up = await store.outbox_add("inc-1", "page", "resolve", T0)
        pending = await store.outbox_add("inc-1", "slack", "execute", T0)
        await store.outbox_finish(delivered, "delivered")
        await store.outbox_reschedule(given_up, T0 + 60, 5, "410 gone")
        await store.outbox_finish(given_up, "gave_up")
        assert [i.id for i in await store.outbox_due(T0 + 10**6)] == [pending]
        # A late reschedule or a second finish does not make it due again.
        await store.outbox_reschedule(delivered, T0 + 1, 1, "late")
        await store.outbox_finish(delivered, "delivered")
        assert [i.id for i in await store.outbox_due(T0 + 10**6)] == [pending]
        await store.close()
        restarted = await reopen()
        assert [i.id for i in await restarted.outbox_due(T0 + 10**6)] == [pending]

    async def test_outbox_pending_lists_an_incidents_unfinished_items(
        self, store: Store, reopen: Reopen
    ) -> None:
        page = await store.outbox_add("inc-1", "page", "execute", T0)
        later = await store.outbox_add("inc-1", "slack", "execute", T0 + 60)
        await store.outbox_add("inc-2", "page", "execute", T0)
        done = await store.outbox_add("inc-1", "page", "resolve", T0)
        await store.outbox_finish(done, "delivered")
        await store.outbox_reschedule(page, T0 + 3600, 3, "503")
        assert [(i.id, i.next_at) for i in await store.outbox_pending("inc-1")] == [
            (page, T0 + 3600),
            (later, T0 + 60),
        ]
        assert await store.outbox_pending("inc-9") == []
        await store.close()
        restarted = await reopen()
        assert [i.id for i in await restarted.outbox_pending("inc-1")] == [page, later]

    async def test_outbox_unknown_item_raises(self, store: Store) -> None:
        with pytest.raises(KeyError):
            await store.outbox_reschedule(12345, T0, 1, "x")
        with pytest.raises(KeyError):
            await store.outbox_finish(12345, "delivered")
        assert await store.outbox_due(T0 + 10**6) == []

    async def test_outbox_due_order_and_limit(self, store: Store) -> None:
        later = await store.outbox_add("inc-1", "page", "execute", T0 + 5)
        first = await store.outbox_add("inc-2", "page", "execute", T0)
        tie = await store.outbox_add("inc-3", "page", "execute", T0)
        # By next_at, then id (the order they were added).
        assert [i.id for i in await store.outbox_due(T0 + 5)] == [first, tie, later]
        await store.outbox_reschedule(first, T0 + 10, 1, "e")
        assert [i.id for i in await store.outbox_due(T0 + 10)] == [tie, later, first]
        assert [i.id for i in await store.outbox_due(T0 + 10, limit=2)] == [tie, later]
        assert [i.id for i in await store.outbox_due(T0 + 5, limit=5)] == [tie, later]
        assert await store.outbox_due(T0 + 10, limit=0) == []
        with pytest.raises(ValueError, match="limit"):
            await store.outbox_due(T0, limit=-1)

    async def test_outbox_survives_restart(self, store: Store, reopen: Reopen) -> None:
        a = await store.outbox_add("inc-1", "page", "execute", T0)
        b = await store.outbox_add("inc-1", "page", "resolve", T0 + 1)
        await store.outbox_reschedule(a, T0 + 30, 1, "connection refused")
        before = await store.outbox_due(T0 + 30)
        assert [i.id for i in before] == [b, a]
        await store.close()

        restarted = await reopen()
        assert await restarted.outbox_due(T0 + 30) == before
        await restarted.outbox_finish(b, "delivered")
        c = await restarted.outbox_add("inc-2", "page", "execute", T0 + 2)
        assert c not in {a, b}
        assert [i.id for i in await restarted.outbox_due(T0 + 30)] == [c, a]

    # -- batches: one transaction for several writes ------------------------------------------

    async def test_a_batch_commits_every_write_and_reads_its_own(
        self, store: Store, reopen: Reopen
    ) -> None:
        await store.put_value("alerts:web", "gone", {"n": 0})
        async with store.batch():
            await store.create_incident(make_incident(timeline=[TimelineEntry(T0, "opened", "o")]))
            await store.append_timeline("inc-1", TimelineEntry(T0 + 1, "alert", "joined"))
            for i in range(5):
                await store.put_value("alerts:web", f"fp{i}", {"n": i})
            await store.put_value("alerts:web", "gone", None)
            action_id = await store.begin_action("inc-1", "web", "rollback", T0)
            item_id = await store.outbox_add("inc-1", "page", "execute", T0)
            # Inside the batch the task reads what it wrote, before anything is committed.
            inside = await store.get_incident("inc-1")
            assert inside is not None
            assert [e.kind for e in inside.timeline] == ["opened", "alert"]
            assert await store.get_value("alerts:web", "gone") is None
            assert len(await store.values("alerts:web")) == 5
        await store.close()

        restarted = await reopen()
        got = await restarted.get_incident("inc-1")
        assert got is not None
        assert [e.message for e in got.timeline] == ["o", "joined"]
        assert await restarted.values("alerts:web") == {f"fp{i}": {"n": i} for i in range(5)}
        assert [a.id for a in await restarted.running_actions()] == [action_id]
        assert [i.id for i in await restarted.outbox_due(T0)] == [item_id]

    async def test_a_batch_that_raises_writes_nothing(self, store: Store) -> None:
        await store.create_incident(make_incident(timeline=[TimelineEntry(T0, "opened", "o")]))
        await store.put_value("ns", "kept", 1)

        async def failing() -> None:
            async with store.batch():
                await store.append_timeline("inc-1", TimelineEntry(T0 + 1, "alert", "lost"))
                await store.create_incident(make_incident("inc-2"))
                await store.resolve_incident("inc-1", T0 + 2)
                await store.put_value("ns", "kept", None)
                await store.put_value("ns", "new", 2)
                await store.begin_action("inc-1", "r", "rollback", T0)
                await store.outbox_add("inc-1", "page", "execute", T0)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await failing()
        got = await store.get_incident("inc-1")
        assert got is not None
        assert (got.status, [e.message for e in got.timeline]) == (IncidentStatus.OPEN, ["o"])
        assert await store.get_incident("inc-2") is None
        assert await store.values("ns") == {"kept": 1}
        assert await store.running_actions() == []
        assert await store.outbox_due(T0) == []
        # And the store goes on as before.
        await store.put_value("ns", "after", 3)
        assert await store.get_value("ns", "after") == 3

    async def test_a_batch_inside_a_batch_joins_it(self, store: Store) -> None:
        async def failing() -> None:
            async with store.batch():
                async with store.batch():
                    await store.put_value("ns", "inner", 1)
                await store.put_value("ns", "outer", 2)
                raise RuntimeError("the outer batch fails after the inner one ended")

        with pytest.raises(RuntimeError, match="outer batch"):
            await failing()
        assert await store.values("ns") == {}
        async with store.batch():
            async with store.batch():
                await store.put_value("ns", "inner", 1)
            assert await store.get_value("ns", "inner") == 1
            await store.put_value("ns", "outer", 2)
        assert await store.values("ns") == {"inner": 1, "outer": 2}

    async def test_other_tasks_wait_for_a_batch_and_never_see_it_half_done(
        self, store: Store
    ) -> None:
        await store.put_value("ns", "k", 0)
        others: list[asyncio.Future[Any]] = []

        async def failing() -> None:
            async with store.batch():
                await store.put_value("ns", "k", 1)
                others.append(asyncio.ensure_future(store.get_value("ns", "k")))
                others.append(asyncio.ensure_future(store.put_value("ns", "other", "mine")))
                for _ in range(5):
                    await asyncio.sleep(0)
                await store.put_value("ns", "k", 2)
                assert not any(task.done() for task in others)
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError, match="roll back"):
            await failing()
        reader, writer = others
        await writer
        # The reader waited for the batch and got the committed value, not the batch's.
        assert await reader == 0
        # The other task's write came after the rolled-back batch and is kept.
        assert await store.values("ns") == {"k": 0, "other": "mine"}

    async def test_a_batch_is_invisible_elsewhere_until_it_ends(
        self, store: Store, reopen: Reopen
    ) -> None:
        # A second connection to the same storage, as another process (or a restart) has.
        elsewhere = await reopen()
        async with store.batch():
            await store.create_incident(make_incident())
            await store.put_value("ns", "k", 1)
            assert await elsewhere.get_incident("inc-1") is None
            assert await elsewhere.get_value("ns", "k") is None
        assert await elsewhere.get_incident("inc-1") is not None
        assert await elsewhere.get_value("ns", "k") == 1

    async def test_a_cancelled_batch_writes_nothing(self, store: Store) -> None:
        written = asyncio.Event()

        async def stuck() -> None:
            async with store.batch():
                await store.put_value("ns", "k", 1)
                await store.create_incident(make_incident())
                written.set()
                await asyncio.Event().wait()

        task = asyncio.ensure_future(stuck())
        await written.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await store.get_value("ns", "k") is None
        assert await store.get_incident("inc-1") is None
        await store.put_value("ns", "k", 2)
        assert await store.get_value("ns", "k") == 2

    # -- concurrent writers ------------------------------------------------------------------

    async def test_concurrent_batches_all_commit(self, store: Store, reopen: Reopen) -> None:
        async def writer(i: int) -> None:
            async with store.batch():
                await store.create_incident(make_incident(f"inc-{i}", opened_at=T0 + i))
                await store.append_timeline(f"inc-{i}", TimelineEntry(T0 + i, "alert", str(i)))
                await store.put_values("ns", {f"k{i}": i})

        await asyncio.gather(*(writer(i) for i in range(20)))
        await store.close()

        await assert_twenty_writers_durable(reopen)

    async def test_a_failing_writer_among_concurrent_ones_fails_alone(self, store: Store) -> None:
        await store.create_incident(make_incident("taken"))

        async def writer(i: int) -> None:
            async with store.batch():
                await store.put_value("ns", f"k{i}", i)
                # The fifth batch creates an incident that exists: it is rolled back whole.
                await store.create_incident(make_incident("taken" if i == 4 else f"inc-{i}"))
                await store.append_timeline("taken", TimelineEntry(T0, "alert", str(i)))

        results = await asyncio.gather(
            *(writer(i) for i in range(10)),
            store.append_timeline("nope", TimelineEntry(T0, "alert", "lost")),
            store.put_value("ns", "alone", 1),
            return_exceptions=True,
        )
        assert [type(r).__name__ for r in results] == [
            *["NoneType"] * 4,
            "ValueError",
            *["NoneType"] * 5,
            "KeyError",
            "NoneType",
        ]
        assert await store.values("ns") == {f"k{i}": i for i in range(10) if i != 4} | {"alone": 1}
        taken = await store.get_incident("taken")
        assert taken is not None
        assert [e.message for e in taken.timeline] == [str(i) for i in range(10) if i != 4]
        assert {i.id for i in await store.open_incidents()} == {"taken"} | {
            f"inc-{i}" for i in range(10) if i != 4
        }

    async def test_a_writer_cancelled_while_it_waits_writes_nothing(self, store: Store) -> None:
        holder, release = await hold_batch(store)
        waiting = asyncio.ensure_future(store.put_value("ns", "cancelled", 1))
        after = asyncio.ensure_future(store.put_value("ns", "after", 1))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()  # it waits for the batch
        waiting.cancel()
        release.set()
        await holder
        await after
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await store.values("ns") == {"batch": 1, "after": 1}

    async def test_each_task_writes_in_the_order_it_issues(self, store: Store) -> None:
        for t in range(5):
            await store.create_incident(make_incident(f"inc-{t}"))

        async def writer(t: int) -> None:
            for j in range(0, 12, 3):
                await store.append_timeline(f"inc-{t}", TimelineEntry(T0, "s", str(j)))
                await store.put_value("last", str(t), j)
                async with store.batch():
                    for k in (j + 1, j + 2):
                        await store.append_timeline(f"inc-{t}", TimelineEntry(T0, "s", str(k)))
                        await store.put_value("last", str(t), k)
                    await store.put_value("last", "gone", t)
                    await store.put_value("last", "gone", None)

        await asyncio.gather(*(writer(t) for t in range(5)))
        for t in range(5):
            got = await store.get_incident(f"inc-{t}")
            assert got is not None
            assert [e.message for e in got.timeline] == [str(j) for j in range(12)]
        assert await store.values("last") == {str(t): 11 for t in range(5)}
        # Writers to one key, all at once: the last one issued is the value that stays.
        await asyncio.gather(*(store.put_value("ns", "k", i) for i in range(20)))
        assert await store.get_value("ns", "k") == 19

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
        await act(store, "r", "rollback", cutoff - 1, "ok")
        await act(store, "r", "rollback", cutoff - 2, None)
        await act(store, "r", "page", cutoff, "ok")

        # Outbox items are pruned too, but `Pruned` does not count them.
        assert tuple(await store.prune(cutoff)) == (1, 2, 0, 0)

        assert await store.get_incident("resolved-old") is None
        assert await store.get_incident("resolved-at-cutoff") is not None
        open_old = await store.get_incident("open-old")
        assert open_old is not None
        assert len(open_old.timeline) == 1
        assert await store.last_action("r", "rollback") is None
        assert await store.last_action("r", "page") == cutoff
        assert await store.count_actions(0.0) == 1
        assert await store.running_actions() == []
        assert tuple(await store.prune(cutoff)) == (0, 0, 0, 0)
        # The id of a pruned incident is free again, with an empty timeline.
        await store.create_incident(make_incident("resolved-old"))
        reused = await store.get_incident("resolved-old")
        assert reused is not None
        assert reused.timeline == []

    async def test_prune_outbox_takes_finished_items_only(self, store: Store) -> None:
        cutoff = T0 + 1000
        finished_old = await store.outbox_add("inc-1", "page", "execute", cutoff - 1)
        await store.outbox_finish(finished_old, "delivered")
        finished_at_cutoff = await store.outbox_add("inc-1", "page", "resolve", cutoff)
        await store.outbox_finish(finished_at_cutoff, "delivered")
        pending_ancient = await store.outbox_add("inc-2", "page", "execute", T0 - 10**6)
        pending_retried = await store.outbox_add("inc-3", "page", "execute", T0)
        await store.outbox_reschedule(pending_retried, cutoff + 60, 9, "still failing")

        await store.prune(cutoff)

        # Unfinished items are never pruned, however old: they still have to be delivered.
        due = await store.outbox_due(cutoff + 60)
        assert [i.id for i in due] == [pending_ancient, pending_retried]
        assert due[1].attempts == 9
        # A pruned item is unknown; one finished at the cutoff is kept (finishing again is a
        # no-op rather than a KeyError).
        with pytest.raises(KeyError):
            await store.outbox_finish(finished_old, "delivered")
        await store.outbox_finish(finished_at_cutoff, "delivered")
