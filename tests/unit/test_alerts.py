"""Alerts pushed to runbookd (Alertmanager v4, Grafana) drive the same engine and pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from daemon.config.loader import load_config_text
from daemon.config.problems import ConfigError
from daemon.config.settings import AlertLimits
from daemon.core.models import IncidentStatus
from daemon.engine.alerts import RESOLVED_RETENTION, Alert, AlertCapReached, AlertmanagerWebhook
from daemon.engine.pushed_alerts import JOINED_DETAILS
from daemon.rules.config import RuleConfig
from daemon.store.sqlite.repository import SqliteStore
from tests.alertmanager_webhook import alert, webhook
from tests.memory_store import MemoryData
from tests.world import Commits, FakeAction, FakePager, S, World, build_world, make_world

RULE = {"when": {"alert": "HighErrorRate", "labels": {"service": "web"}}, "do": ["rollback"]}


def parse(body: dict[str, Any]) -> list[Alert]:
    return AlertmanagerWebhook.model_validate(body).to_alerts()


async def test_a_firing_alert_opens_one_incident_and_remediates_once() -> None:
    w = make_world({"errors": RULE})
    for _ in range(3):  # Alertmanager's retries and repeat_interval resend the same alert
        (a,) = parse(webhook(alert()))
        assert await w.engine.alert(a) == ["errors"]
        await w.clock.advance(0)
    assert len(w.opened) == 1
    assert len(w.actions["rollback"].calls) == 1
    trigger = (await w.stored(w.opened[0].id)).trigger
    assert trigger["fingerprint"] == "fp1"
    assert trigger["labels"]["service"] == "web"


async def test_a_second_alert_joins_and_the_last_resolution_resolves() -> None:
    w = make_world({"errors": RULE})
    for body in (alert(fingerprint="a"), alert(fingerprint="b", instance="2")):
        await w.engine.alert(parse(webhook(body))[0])
        await w.clock.advance(0)
    await w.engine.alert(parse(webhook(alert("resolved", fingerprint="a")))[0])
    assert (await w.stored(w.opened[0].id)).status.value == "open"
    await w.engine.alert(parse(webhook(alert("resolved", fingerprint="b")))[0])
    await w.clock.advance(0)
    assert (await w.stored(w.opened[0].id)).status.value == "resolved"
    # opened by a, joined by b, resolved when b (the last) resolves; the rollback is told
    assert w.kinds() == ["opened", "action", "result", "alert", "resolved", "result"]


async def test_alerts_that_do_not_match_are_ignored() -> None:
    w = make_world({"errors": RULE})
    assert await w.engine.alert(parse(webhook(alert(service="api")))[0]) == []
    assert w.opened == []


async def test_a_reload_that_changes_the_watched_alert_routes_by_the_new_name() -> None:
    w = make_world({"errors": RULE, "other": {"when": {"alert": "DiskFull"}}})
    assert await w.engine.alert(parse(webhook(alert()))[0]) == ["errors"]
    renamed = {"when": {"alert": "DiskFull", "labels": {"service": "web"}}, "do": ["rollback"]}
    rules = {"errors": renamed, "other": {"when": {"alert": "DiskFull"}}}
    configs = {name: RuleConfig.model_validate(rule) for name, rule in rules.items()}
    w.engine.set_rules(configs, w.engine.staleness)
    assert await w.engine.alert(parse(webhook(alert(fingerprint="x")))[0]) == []
    disk = alert(fingerprint="d")
    disk["labels"]["alertname"] = "DiskFull"
    assert await w.engine.alert(parse(webhook(disk))[0]) == ["errors", "other"]


async def test_firing_alerts_survive_a_restart() -> None:
    data = MemoryData()
    before = make_world({"errors": RULE}, data=data)
    await before.engine.alert(parse(webhook(alert()))[0])
    after = make_world({"errors": RULE}, {"rollback": FakeAction("rollback")}, data=data)
    await after.engine.restore()
    await after.engine.alert(parse(webhook(alert()))[0])  # a repeat after the restart
    assert after.opened == []
    assert after.actions["rollback"].calls == []
    await after.engine.alert(parse(webhook(alert("resolved")))[0])
    assert data.incidents[before.opened[0].id].status.value == "resolved"


async def test_an_alert_rule_pages_and_escalates_like_any_other() -> None:
    pager = FakePager("page")
    w = make_world({"errors": RULE | {"do": ["page"]}}, {"page": pager})
    await w.engine.alert(parse(webhook(alert()))[0])
    await w.clock.advance(0)
    await w.engine.alert(parse(webhook(alert("resolved")))[0])
    await w.clock.advance(0)
    assert pager.calls == pager.resolved == [w.opened[0].id]


# -- one request, one transaction: on the real SQLite store ----------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "runbookd.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(db_path)
    await store.open()
    yield store
    await store.close()


def request(*fingerprints: str, status: str = "firing") -> list[Alert]:
    """One Alertmanager request: an alert per fingerprint, with its own instance label."""
    return parse(webhook(*(alert(status, fp, instance=fp) for fp in fingerprints)))


async def test_new_alerts_of_one_request_are_one_commit_one_incident_and_two_entries(
    db: SqliteStore,
) -> None:
    w = build_world(db, {"errors": RULE})
    fps = [f"fp{i}" for i in range(5)]
    alerts = request(*fps) + parse(webhook(alert(fingerprint="api", service="api")))
    with capture_logs() as logs:
        async with Commits(db) as commits:
            routed = await w.engine.alerts(alerts)
    assert commits.count == 1
    assert routed == [["errors"]] * 5 + [[]]
    (incident,) = await db.list_incidents()
    assert incident.trigger["fingerprint"] == "fp0"
    opened, joined = await w.timeline()
    assert (opened.kind, joined.kind) == ("opened", "alert")
    assert joined.message == (
        "4 alerts joined: 5xx above 5% on web; 5xx above 5% on web; 5xx above 5% on web and 1 more"
    )
    assert (joined.data["count"], joined.data["more"]) == (4, 0)
    assert [a["fingerprint"] for a in joined.data["alerts"]] == fps[1:]
    assert joined.data["alerts"][0]["labels"]["instance"] == "fp1"
    # One log line for the incident, none per alert: alerts joining are in the timeline only.
    steps = [(e["step"], e["log_level"]) for e in logs if "step" in e]
    assert steps == [("opened", "info")]
    assert await db.values("alerts:errors") == {
        fp: {
            "name": "HighErrorRate",
            "firing": True,
            "fingerprint": fp,
            "labels": {"alertname": "HighErrorRate", "service": "web", "instance": fp},
            "annotations": {"summary": "5xx above 5% on web"},
            "starts_at": a.starts_at,
            "ends_at": None,
            "generator_url": "http://prometheus:9090/graph?g0.expr=...",
            "source": "alertmanager",
        }
        for fp, a in zip(fps, alerts, strict=False)
    }
    await w.settle()
    assert w.actions["rollback"].calls == [incident.id]  # remediated once for the request

    # New alerts joining the open incident: one commit, one entry (one alert: its details).
    async with Commits(db) as commits:
        await w.engine.alerts(request("fp5"))
    assert commits.count == 1
    assert (await w.timeline())[-1].data["fingerprint"] == "fp5"


async def test_a_storm_of_joining_alerts_stays_in_the_store_not_in_memory(
    db: SqliteStore,
) -> None:
    w = build_world(db, {"errors": RULE})
    await w.engine.alerts(request("first"))
    for i in range(50):
        await w.engine.alerts(request(*(f"fp{i}-{k}" for k in range(10))))
    await w.settle()
    (incident,) = w.engine.incidents.values()
    # In memory: what decisions read (opened, actions...), no joined alerts; fingerprints only.
    assert "alert" not in {e.kind for e in incident.timeline}
    assert all(type(fp) is str for fp in w.engine.alert_rules["errors"].firing)
    assert len(w.engine.alert_rules["errors"].firing) == 501
    # In the store: every request's entry and every alert.
    assert [e.kind for e in await w.timeline()].count("alert") == 50
    assert len(await db.values("alerts:errors")) == 501


async def test_repeats_change_nothing(db: SqliteStore) -> None:
    w = build_world(db, {"errors": RULE})
    # A resolution of what never fired here is recorded (its firing may come late), once.
    await w.engine.alerts(request("a", "b", "c") + request("x", status="resolved"))
    await w.settle()
    before = await w.timeline()
    with capture_logs() as logs:
        async with Commits(db) as commits:
            # Alertmanager's repeat, in another order, and the resolution again.
            routed = await w.engine.alerts(request("c", "a", "b") + request("x", status="resolved"))
    assert commits.count == 0
    assert logs == []
    assert routed == [["errors"]] * 4  # still matched: the `matched` count does not change
    assert await w.timeline() == before
    assert len(await db.list_incidents()) == 1
    assert set(await db.values("alerts:errors")) == {"a", "b", "c"}


async def test_a_request_beyond_the_detail_bound_keeps_its_entry_bounded(
    db: SqliteStore,
) -> None:
    w = build_world(db, {"errors": RULE})
    fps = [f"fp{i:03d}" for i in range(250)]
    async with Commits(db) as commits:
        await w.engine.alerts(request(*fps))
    assert commits.count == 1
    opened, joined = await w.timeline()
    assert opened.data["fingerprint"] == "fp000"
    assert (joined.data["count"], joined.data["more"]) == (249, 249 - JOINED_DETAILS)
    assert [a["fingerprint"] for a in joined.data["alerts"]] == fps[1 : 1 + JOINED_DETAILS]
    assert joined.message.endswith(" and 246 more")
    # The store still has every alert: that is what a restart resumes from.
    assert sorted(await db.values("alerts:errors")) == fps


async def test_a_restart_restores_every_fingerprint(db: SqliteStore, db_path: Path) -> None:
    before = build_world(db, {"errors": RULE})
    fps = [f"fp{i:02d}" for i in range(30)]
    await before.engine.alerts(request(*fps))
    await before.settle()
    (incident,) = await db.list_incidents()
    await db.close()

    restarted = SqliteStore(db_path)
    await restarted.open()
    try:
        after = build_world(restarted, {"errors": RULE}, {"rollback": FakeAction("rollback")})
        await after.engine.restore()
        assert sorted(after.engine.alert_rules["errors"].firing) == fps
        assert after.engine.incidents["errors"].id == incident.id
        async with Commits(restarted) as commits:
            await after.engine.alerts(request(*reversed(fps)))  # a repeat after the restart
        assert commits.count == 0
        assert after.opened == []
        # All of them resolve in one request: one commit, and the incident with them.
        async with Commits(restarted) as commits:
            await after.engine.alerts(request(*fps, status="resolved"))
        assert commits.count == 1
        await after.settle()
        got = await restarted.get_incident(incident.id)
        assert got is not None
        assert got.status is IncidentStatus.RESOLVED
        kinds = [e.kind for e in got.timeline]
        assert kinds.count("alert") == 1  # the one joined entry of the first request
        assert kinds.index("restored") < kinds.index("resolved")
        assert await restarted.values("alerts:errors") == {}
        assert after.actions["rollback"].calls == []
        assert after.actions["rollback"].resolved == [incident.id]
    finally:
        await restarted.close()


async def test_a_mixed_request_keeps_the_order_of_its_alerts(db: SqliteStore) -> None:
    w: World[SqliteStore] = build_world(db, {"errors": RULE})
    await w.engine.alerts(request("a", "b"))
    await w.settle()
    first = w.opened[-1]

    async def send(*alerts: tuple[str, str]) -> int:
        batch = [a for fp, status in alerts for a in request(fp, status=status)]
        await w.settle()  # what the last request started is not this one's
        async with Commits(db) as commits:
            await w.engine.alerts(batch)
        await w.settle()
        return commits.count

    # Two join and the first two resolve: the rule never stops firing, nothing resolves.
    assert await send(("c", "firing"), ("a", "resolved"), ("d", "firing"), ("b", "resolved")) == 1
    assert set(await db.values("alerts:errors")) == {"c", "d"}
    entries = await w.timeline(first)
    assert entries[-1].kind == "alert"
    assert [a["fingerprint"] for a in entries[-1].data["alerts"]] == ["c", "d"]
    assert [e.kind for e in entries].count("resolved") == 0

    # One more joins, then every alert resolves: the join is written before the resolution.
    assert await send(("e", "firing"), ("c", "resolved"), ("d", "resolved"), ("e", "resolved")) == 1
    entries = await w.timeline(first)
    resolved = [e.kind for e in entries].index("resolved")
    assert entries[resolved - 1].kind == "alert"
    assert entries[resolved - 1].data["fingerprint"] == "e"

    # The last alert resolves and a new one fires after it: a new incident, as one by one.
    await w.engine.alerts(request("f"))
    assert await send(("f", "resolved"), ("g", "firing"), ("h", "firing")) == 1
    second = w.opened[-1]
    assert second.id != first.id
    got = await db.get_incident(w.opened[-2].id)
    assert got is not None
    assert got.status is IncidentStatus.RESOLVED
    entries = await w.timeline(second)
    assert [e.kind for e in entries][:2] == ["opened", "alert"]
    assert (entries[0].data["fingerprint"], entries[1].data["fingerprint"]) == ("g", "h")
    assert set(await db.values("alerts:errors")) == {"g", "h"}
    await w.settle()


async def test_an_operator_resolving_many_alerts_is_one_commit(db: SqliteStore) -> None:
    w = build_world(db, {"errors": RULE})
    fps = [f"fp{i}" for i in range(25)]
    await w.engine.alerts(request(*fps))
    await w.settle()
    incident = w.opened[-1]
    async with Commits(db) as commits:
        assert await w.engine.resolve_by_operator(incident.id, "alice", "known issue")
    assert commits.count == 1
    assert await db.values("alerts:errors") == {}
    (resolved,) = [e for e in await w.timeline(incident) if e.kind == "resolved"]
    assert resolved.message == "resolved by alice: known issue"
    # The rule starts afresh: the same alerts open a new incident.
    await w.engine.alerts(request(*fps))
    assert w.opened[-1].id != incident.id
    await w.settle()


async def test_entries_are_announced_once_committed_and_never_if_rolled_back(
    db: SqliteStore,
) -> None:
    w = build_world(db, {"errors": RULE})
    await w.engine.alerts(request("a"))
    await w.settle()
    incident, recorder = w.opened[-1], w.engine.recorder
    seen: list[str] = []
    recorder.listeners.append(lambda i, entry: seen.append(entry.message))

    async def failing() -> None:
        async with recorder.batch():
            await recorder.record(incident, "note", "lost")
            raise RuntimeError("the request fails before its commit")

    with capture_logs() as logs:
        with pytest.raises(RuntimeError, match="before its commit"):
            await failing()
        async with recorder.batch():
            await recorder.record(incident, "note", "kept")
            assert seen == []  # written, not yet committed: not told
        assert seen == ["kept"]
    assert [e["event"] for e in logs] == ["kept"]
    assert [e.message for e in await w.timeline(incident)][-1] == "kept"
    assert "lost" not in [e.message for e in await w.timeline(incident)]


def test_grafana_superset_is_accepted() -> None:
    body = webhook(
        alert()
        | {
            "values": {"A": 7.3},
            "valueString": "[ var='A' value=7.3 ]",
            "dashboardURL": "",
            "panelURL": "",
            "silenceURL": "",
        },
        orgId=1,
        title="[FIRING:1] HighErrorRate",
        state="alerting",
        message="...",
    )
    (a,) = parse(body)
    assert (a.name, a.firing, a.fingerprint) == ("HighErrorRate", True, "fp1")


def test_missing_fingerprint_is_derived_from_the_labels() -> None:
    one = alert(fingerprint="")
    (a,) = parse(webhook(one))
    (b,) = parse(webhook(one))
    assert a.fingerprint == b.fingerprint != ""


@pytest.mark.parametrize(
    ("field", "rule"),
    [("for", {"for": "5m"}), ("clear_for", {"clear_for": "1m"})],
)
def test_alert_rules_refuse_check_only_fields(field: str, rule: dict[str, str]) -> None:
    text = f"""
rules:
  errors:
    when: {{alert: HighErrorRate}}
    {next(iter(rule))}: {next(iter(rule.values()))}
"""
    with pytest.raises(ConfigError) as err:
        load_config_text(text, "c.yaml")
    assert f"{field}: only for rules on check values, not on alerts" in str(err.value)


# -- late deliveries: a firing of an episode already resolved -------------------------------

T0 = 1_800_000_000.0  # the episode's startsAt, on the sender's clock
T1 = T0 + 600  # when it resolved (endsAt)
T2 = T1 + 60  # a new episode of the same fingerprint


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def episode(status: str, starts: float, ends: float | None = None, fp: str = "fp1") -> Alert:
    """Alertmanager's alert: a resolved one has the firing one's startsAt and an endsAt."""
    body = alert(status, fp) | {"startsAt": iso(starts)}
    if ends is not None:
        body["endsAt"] = iso(ends)
    (a,) = parse(webhook(body))
    return a


def stale_count(w: World[Any], rule: str = "errors") -> float:
    labels = {"rule": rule}
    return w.metrics.registry.get_sample_value("runbookd_alerts_refused_total", labels) or 0.0


async def test_a_late_firing_of_a_resolved_episode_opens_nothing() -> None:
    w = make_world({"errors": RULE})
    await w.engine.alert(episode("firing", T0))
    await w.clock.advance(0)
    await w.engine.alert(episode("resolved", T0, T1))
    await w.clock.advance(0)
    # The other Alertmanager of the pair delivers its firing notification late.
    with capture_logs() as logs:
        assert await w.engine.alert(episode("firing", T0)) == ["errors"]
        assert await w.engine.alerts([episode("firing", T0)] * 3) == [["errors"]] * 3
    await w.clock.advance(0)
    assert len(w.opened) == 1
    assert len(w.actions["rollback"].calls) == 1
    assert w.engine.incidents == {}
    assert stale_count(w) == 4
    # One line per request (and rule), not per alert.
    assert [(e["event"], e["log_level"], e["count"]) for e in logs] == [
        ("late firing alert refused: its episode already resolved", "info", n) for n in (1, 3)
    ]
    assert logs[0]["fingerprint"] == "fp1"
    # A new episode of the same fingerprint starts after the resolution: a new incident.
    await w.engine.alert(episode("firing", T2))
    await w.clock.advance(0)
    assert len(w.opened) == 2
    assert len(w.actions["rollback"].calls) == 2


async def test_a_late_resolution_of_an_earlier_episode_does_not_end_the_current_one(
    db: SqliteStore, db_path: Path
) -> None:
    """Found by the model-based test: the pair's other Alertmanager delivers the first
    episode's resolution after the second episode fired."""
    w = build_world(db, {"errors": RULE})
    await w.engine.alert(episode("firing", T0))
    await w.engine.alert(episode("resolved", T0, T1))
    await w.engine.alert(episode("firing", T2))
    await w.settle()
    assert len(w.opened) == 2
    await w.engine.alert(episode("resolved", T0, T1))  # late, about the first episode
    await w.settle()
    assert w.engine.incidents["errors"].id == w.opened[1].id
    # and after a restart the episode's start is known from the store
    await db.close()
    restarted = SqliteStore(db_path)
    await restarted.open()
    try:
        after = build_world(restarted, {"errors": RULE})
        await after.engine.restore()
        await after.engine.alert(episode("resolved", T0, T1))
        assert after.engine.incidents["errors"].id == w.opened[1].id
        await after.engine.alert(episode("resolved", T2, T2 + 60))  # its own resolution
        assert "errors" not in after.engine.incidents
        await after.settle()
    finally:
        await restarted.close()


async def test_a_resolution_delivered_before_its_firing_is_remembered(db: SqliteStore) -> None:
    w = build_world(db, {"errors": RULE})
    async with Commits(db) as commits:
        await w.engine.alert(episode("resolved", T0, T1))
    assert commits.count == 1
    async with Commits(db) as commits:
        await w.engine.alert(episode("firing", T0))  # the late firing: nothing to write
        await w.engine.alert(episode("resolved", T0, T1))  # a repeat of the resolution
    assert commits.count == 0
    assert w.opened == []
    assert stale_count(w) == 1


async def test_a_late_firing_after_a_restart_opens_nothing(db: SqliteStore, db_path: Path) -> None:
    before = build_world(db, {"errors": RULE})
    await before.engine.alerts([episode("firing", T0, fp=fp) for fp in ("a", "b")])
    await before.settle()
    await before.engine.alerts([episode("resolved", T0, T1, fp=fp) for fp in ("a", "b")])
    await before.settle()
    assert len(before.actions["rollback"].calls) == 1
    await db.close()

    restarted = SqliteStore(db_path)
    await restarted.open()
    try:
        after = build_world(restarted, {"errors": RULE}, clock=before.clock)
        await after.engine.restore()
        async with Commits(restarted) as commits:
            await after.engine.alerts([episode("firing", T0, fp=fp) for fp in ("b", "a")])
        assert commits.count == 0
        assert after.opened == []
        assert stale_count(after) == 2
        await after.engine.alerts([episode("firing", T2, fp="a")])
        await after.settle()
        assert len(after.opened) == 1
        assert len(after.actions["rollback"].calls) == 1
    finally:
        await restarted.close()


async def test_alerts_without_a_start_are_never_held_back() -> None:
    # A generic webhook gives no timestamps: a firing after a resolution is a new episode
    # (a replayed signed request is refused at the door instead).
    w = make_world({"errors": RULE})
    for firing in (True, False, True):
        await w.engine.alert(Alert("HighErrorRate", firing, "hook", {"service": "web"}))
        await w.clock.advance(0)
    assert len(w.opened) == 2
    assert await w.store.values("resolved:errors") == {}


async def test_an_operator_resolution_still_lets_the_firing_alert_reopen() -> None:
    w = make_world({"errors": RULE})
    for a in (episode("firing", T0), episode("resolved", T0, T1), episode("firing", T2)):
        await w.engine.alert(a)
        await w.clock.advance(0)
    assert await w.engine.resolve_by_operator(w.opened[-1].id, "alice", "")
    # Alertmanager repeats the alert still firing: the rule started afresh, a new incident.
    await w.engine.alert(episode("firing", T2))
    await w.clock.advance(0)
    assert len(w.opened) == 3
    # When that episode resolves, its late firing is refused like any other.
    await w.engine.alert(episode("resolved", T2, T2 + 60))
    await w.engine.alert(episode("firing", T2))
    assert len(w.opened) == 3
    assert stale_count(w) == 1


async def test_resolution_records_expire(db: SqliteStore) -> None:
    w = build_world(db, {"errors": RULE})
    fps = [f"fp{i:03d}" for i in range(200)]
    await w.engine.alerts([episode("firing", T0, fp=fp) for fp in fps])
    await w.engine.alerts([episode("resolved", T0, T1, fp=fp) for fp in fps])
    await w.settle()
    assert len(await db.values("resolved:errors")) == 200
    # An hour later, the next resolution recorded takes the expired ones with it.
    await w.clock.advance(RESOLVED_RETENTION + 1)
    await w.engine.alerts([episode("firing", T2, fp="new")])
    await w.engine.alerts([episode("resolved", T2, T2 + 1, fp="new")])
    await w.settle()
    assert list(await db.values("resolved:errors")) == ["new"]
    assert len(w.engine.alert_rules["errors"].resolved) == 1
    # An expired record holds nothing back: the late firing is a new incident again.
    await w.engine.alerts([episode("firing", T0, fp="fp000")])
    await w.settle()
    assert w.opened[-1].trigger["fingerprint"] == "fp000"


async def test_resolution_records_are_capped_per_rule(
    db: SqliteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("daemon.engine.alerts.MAX_RESOLVED", 50)
    w = build_world(db, {"errors": RULE})
    for i in range(10):  # a storm: 10 requests of 20 alerts that fire and resolve
        fps = [f"fp{i}-{k}" for k in range(20)]
        await w.engine.alerts([episode("firing", T0, fp=fp) for fp in fps])
        await w.engine.alerts([episode("resolved", T0, T1, fp=fp) for fp in fps])
    await w.settle()
    kept = await db.values("resolved:errors")
    newest = [f"fp7-{k}" for k in range(10, 20)] + [f"fp{i}-{k}" for i in (8, 9) for k in range(20)]
    assert sorted(kept) == sorted(newest)  # the oldest went first
    assert len(w.engine.alert_rules["errors"].resolved) == 50
    await db.close()

    # A restart an hour later drops what expired meanwhile, from memory and the store.
    restarted = SqliteStore(db_path)
    await restarted.open()
    try:
        await w.clock.advance(RESOLVED_RETENTION + 1)
        after = build_world(restarted, {"errors": RULE}, clock=w.clock)
        await after.engine.restore()
        assert len(after.engine.alert_rules["errors"].resolved) == 0
        assert await restarted.values("resolved:errors") == {}
    finally:
        await restarted.close()


# -- caps on firing alerts: a flood of distinct alerts costs bounded memory and store ----------


def capped_world(store: S, rules: dict[str, dict[str, Any]], per_rule: int, total: int) -> World[S]:
    """A world whose rules page with `page` (a notifier) and act with `rollback`."""
    actions = {"page": FakePager("page"), "rollback": FakeAction("rollback")}
    w = build_world(store, rules, actions)
    w.engine.limits = AlertLimits(max_firing_per_rule=per_rule, max_firing=total)
    w.engine.notifiers = w.pipeline.plan.notifiers
    return w


PAGED = RULE | {"do": ["rollback", "page"], "escalate": ["rollback"]}


def over_cap(w: World[Any], rule: str) -> float | None:
    return w.metrics.registry.get_sample_value("runbookd_alerts_over_cap_total", {"rule": rule})


async def send(w: World[Any], alerts: list[Alert]) -> int:
    """How many alerts the engine refused at a cap (0: none)."""
    routed = [[n for n, r in w.engine.alert_rules.items() if r.matches(a)] for a in alerts]
    try:
        assert await w.engine.alerts(alerts) == routed
    except AlertCapReached as exc:
        refused = exc
    else:
        return 0
    assert refused.routed == routed
    return refused.refused


async def test_new_alerts_beyond_a_rule_cap_are_refused_and_one_incident_only_pages(
    db: SqliteStore,
) -> None:
    w = capped_world(db, {"errors": PAGED}, per_rule=20, total=1000)
    assert over_cap(w, "errors") == 0  # exists from the start
    assert await send(w, request(*(f"a{i}" for i in range(15)))) == 0
    refused = 0
    for r in range(4):  # the storm: 4 requests of 15 new alerts
        refused += await send(w, request(*(f"s{r}-{i}" for i in range(15))))
    assert refused == 4 * 15 - 5
    assert over_cap(w, "errors") == refused
    # Bounded: in memory and in the store (rows), whatever the storm.
    assert len(w.engine.alert_rules["errors"].firing) == 20
    assert len(await db.values("alerts:errors")) == 20
    gauge = {"rule": "errors"}
    assert w.metrics.registry.get_sample_value("runbookd_alerts_firing", gauge) == 20
    # One incident for the rule, one for its cap, however many requests were refused.
    await w.settle()
    assert sorted(i.rule for i in await db.list_incidents()) == ["errors", "errors:alert_cap"]
    cap = w.engine.incidents["errors:alert_cap"]
    assert cap.summary == (
        "alert cap reached: rule errors has 20 alerts firing (cap 20), runbookd 20 (cap 1000); "
        "new firing alerts are refused (429) until enough resolve"
    )
    # It only pages: the rule's notifiers, never its rollback.
    pager, rollback = w.actions["page"], w.actions["rollback"]
    assert sorted(pager.calls) == sorted([w.engine.incidents["errors"].id, cap.id])
    assert rollback.calls == [w.engine.incidents["errors"].id]
    # Alerts already firing are no news (Alertmanager resends the whole group): not refused.
    assert await send(w, request(*(f"a{i}" for i in range(15)))) == 0


async def test_resolutions_are_never_refused_and_the_cap_incident_resolves_with_hysteresis(
    db: SqliteStore,
) -> None:
    w = capped_world(db, {"errors": PAGED}, per_rule=20, total=1000)
    fps = [f"a{i}" for i in range(20)]
    await send(w, request(*fps))
    await w.settle()
    # A request mixing resolutions and new alerts at the cap: the resolutions and the alerts
    # that then fit are applied (one commit), the others refused.
    mixed = request("a0", status="resolved") + request("n1", "n2")
    async with Commits(db) as commits:
        assert await send(w, mixed) == 1
    assert commits.count == 1
    firing = w.engine.alert_rules["errors"].firing
    assert set(firing) == {f"a{i}" for i in range(1, 20)} | {"n1"}
    cap = w.engine.incidents["errors:alert_cap"]
    await w.settle()  # its page
    # Its resend: what was applied changes nothing, the refused one is refused again.
    async with Commits(db) as commits:
        assert await send(w, mixed) == 1
    assert commits.count == 0
    assert over_cap(w, "errors") == 2
    # One below the cap is not enough (19 > 90% of 20): still open, and not opened twice.
    await send(w, request("a1", status="resolved"))
    assert w.engine.incidents["errors:alert_cap"] is cap
    assert await send(w, request("n3", "n4")) == 1
    await w.settle()
    assert [i.rule for i in w.opened].count("errors:alert_cap") == 1
    # At 90% of the cap it resolves; its page is resolved too.
    await send(w, request("a2", "a3", status="resolved"))
    assert "errors:alert_cap" not in w.engine.incidents
    await w.settle()
    got = await db.get_incident(cap.id)
    assert got is not None
    assert got.status is IncidentStatus.RESOLVED
    (resolved,) = [e for e in got.timeline if e.kind == "resolved"]
    assert resolved.message == "resolved: 18 alerts firing, new ones are accepted again"
    assert w.actions["page"].resolved == [cap.id]


async def test_the_total_cap_bounds_every_rule_together(db: SqliteStore) -> None:
    rules = {
        "errors": PAGED,
        "api": RULE | {"when": {"alert": "HighErrorRate", "labels": {"service": "api"}}},
    }
    w = capped_world(db, rules, per_rule=100, total=30)
    assert await send(w, request(*(f"w{i}" for i in range(30)))) == 0
    api = parse(webhook(*(alert("firing", f"api{i}", service="api") for i in range(5))))
    assert await send(w, api) == 5
    assert w.engine.firing_total() == 30
    assert (over_cap(w, "api"), over_cap(w, "errors")) == (5, 0)
    assert set(w.engine.incidents) == {"errors", "api:alert_cap"}
    # Its plan has no notifier (the rule has none): it is an incident to see, it runs nothing.
    await w.settle()
    assert w.actions["rollback"].calls == [w.engine.incidents["errors"].id]
    # An operator resolves the errors rule's incident, and with it its alerts: room again
    # (the ticker notices).
    assert await w.engine.resolve_by_operator(w.engine.incidents["errors"].id, "ana", "noise")
    await w.engine.tick(w.clock.now())
    assert "api:alert_cap" not in w.engine.incidents
    assert await send(w, api) == 0
    await w.settle()


async def test_after_a_restart_the_alerts_stay_bounded_and_the_cap_incident_resumes(
    db: SqliteStore, db_path: Path
) -> None:
    before = capped_world(db, {"errors": PAGED}, per_rule=20, total=1000)
    for r in range(3):
        await send(before, request(*(f"s{r}-{i}" for i in range(15))))
    await before.settle()
    cap_id = before.engine.incidents["errors:alert_cap"].id
    await db.close()

    restarted = SqliteStore(db_path)
    await restarted.open()
    try:
        after = capped_world(restarted, {"errors": PAGED}, per_rule=20, total=1000)
        await after.engine.restore()
        # As the daemon resumes plans: with the plans of the incidents the engine raised.
        plans = after.engine_rules() | after.engine.incident_plans()
        await after.pipeline.recover(after.engine.incidents.values(), plans)
        assert len(after.engine.alert_rules["errors"].firing) == 20
        assert len(await restarted.values("alerts:errors")) == 20
        assert after.engine.incidents["errors:alert_cap"].id == cap_id
        # Its plan (pages only), for the pipeline to resume.
        plan = after.engine.incident_plans()["errors:alert_cap"]
        assert (plan.do, plan.escalate) == (["page"], [])
        assert await send(after, request("new")) == 1
        assert [i.rule for i in after.opened] == []  # not opened again
        await send(after, request(*(f"s0-{i}" for i in range(5)), status="resolved"))
        assert "errors:alert_cap" not in after.engine.incidents
        await after.settle()
        assert after.actions["page"].calls == []  # paged before the restart, not again
    finally:
        await restarted.close()


def test_the_caps_are_settings_with_bounds() -> None:
    defaults = load_config_text("runbookd: {}\n").runbookd.alerts
    assert (defaults.max_firing_per_rule, defaults.max_firing) == (5_000, 25_000)
    config = load_config_text("runbookd:\n  alerts: {max_firing_per_rule: 10, max_firing: 20}\n")
    assert config.runbookd.alerts == AlertLimits(max_firing_per_rule=10, max_firing=20)
    for text, problem in [
        ("runbookd:\n  alerts: {max_firing: 0}\n", "<config>:2 runbookd.alerts.max_firing"),
        ("runbookd:\n  alerts:\n    max_firing_per_rule: 1e9\n", "<config>:3 runbookd.alerts"),
        ("runbookd:\n  alerts: {max_alerts: 10}\n", "<config>:2 runbookd.alerts.max_alerts"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_config_text(text)
        assert str(caught.value.problems[0]).startswith(problem), caught.value.problems


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("9999-12-31T00:00:00Z", "a time must lie between 2000-01-01 and 2100-01-01"),
        ("1970-01-01T00:00:00Z", "a time must lie between 2000-01-01 and 2100-01-01"),
        ("2026-11-01T00:00:00", "a time is epoch seconds or ISO 8601 with a zone"),
        ("yesterday", "a time is epoch seconds or ISO 8601 with a zone"),
    ],
)
def test_an_alert_time_no_sender_means_is_refused(value: str, reason: str) -> None:
    for field in ("startsAt", "endsAt"):
        body = webhook(alert("firing") | {field: value})
        with pytest.raises(ValidationError) as info:
            AlertmanagerWebhook.model_validate(body)
        (error,) = info.value.errors()
        assert error["loc"] == ("alerts", 0, field)
        assert reason in error["msg"]


def test_alertmanagers_zero_time_is_not_set() -> None:
    body = webhook(alert("resolved") | {"endsAt": "0001-01-01T00:00:00Z"})
    (parsed,) = AlertmanagerWebhook.model_validate(body).to_alerts()
    assert parsed.ends_at is None
