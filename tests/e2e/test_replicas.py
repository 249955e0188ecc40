"""Three `runbookd run` replicas on one PostgreSQL database, fed by a real Alertmanager that
sends every alert to all three: one incident, one action and one page per episode, through
a `kill -9` of the leader mid-action, a leader paused past its lease, and the database
unreachable for a while. Each replica writes its own name in what it does (a command's
output, the page's `source`), so what a stale leader did would show.

The assertions are on outcomes only (the store's rows, the files the commands wrote, the
pages the fake PagerDuty accepted): they hold whether a standby refuses alert intake (503,
which Alertmanager retries) or takes it into the store for the leader.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from tests.alertmanager_server import (
    AlertmanagerServer,
    alertmanager_server,
    metric_sum,
    post_alerts,
)
from tests.fakes.pagerduty import ROUTING_KEY, FakePagerDuty
from tests.pg import EMPTY_STORE, emptied, module_store_database
from tests.replicas import TTL, Replica, ReplicaFiles, log_tail, query, replicas, roles
from tests.replicas import write_replica as write
from tests.tcp_proxy import TcpProxy
from tests.utils import serve

ALERT = {"alertname": "HighErrorRate", "service": "web"}
# The leader renews every TTL/3; a standby claims at the same pace.
CHECK_INTERVAL = TTL / 3
# Beyond the lease and one check: the claim's round trip, the new leader's restore, and our
# polling of /readyz, with two cores shared by the replicas, PostgreSQL and Alertmanager.
SLACK = 0.5
LOST_LEASE = 5  # daemon.runtime.daemon.ExitCode.LOST_LEASE


def plan(do: str, escalate: str = "[]") -> str:
    """Rules and remediations: `note` appends its replica's name and the incident to `runs`;
    `hold` writes the same to `held`, waits (bounded) for the file `release`, then touches
    `ended`; `page` pages the fake PagerDuty with its replica's name as the source."""
    return f"""
rules:
  errors:
    when: {{{{alert: HighErrorRate, labels: {{{{service: web}}}}}}}}
    do: {do}
    escalate: {escalate}
remediations:
  note:
    type: command
    argv: [sh, -c, 'echo "{{replica}} $RUNBOOKD_INCIDENT_ID" >> {{runs}}']
  hold:
    type: command
    timeout: 60s
    argv:
      - sh
      - -c
      - >-
        echo "{{replica}} $RUNBOOKD_INCIDENT_ID" >> {{held}};
        i=0; while [ ! -e {{release}} ] && [ $i -lt 400 ]; do sleep 0.1; i=$((i+1)); done;
        touch {{ended}}
  page:
    type: pagerduty
    routing_key: {ROUTING_KEY}
    events_url: {{pager}}/v2/enqueue
    source: {{replica}}
    retry: {{{{attempts: 1}}}}  # a failure waits in the outbox for its retry
"""


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with module_store_database() as found:
        yield found


@pytest.fixture
async def dsn(database: str) -> str:
    """The module's database, emptied: each test starts with no incident and no lease."""
    await emptied(database, EMPTY_STORE)
    return database


class World:
    """What the replicas act on, and what they did, as files and the fake pager saw it."""

    def __init__(self, tmp: Path, pager: FakePagerDuty, pager_url: str) -> None:
        self.tmp = tmp
        self.pager = pager
        self.pager_url = pager_url
        self.runs, self.held = tmp / "runs", tmp / "held"
        self.release, self.ended = tmp / "release", tmp / "ended"

    def files(self, dsn: str, rules: str, names: str = "abc") -> list[ReplicaFiles]:
        paths = {"runs": self.runs, "held": self.held, "release": self.release, "ended": self.ended}
        return [
            write(self.tmp / n, dsn, rules, name=n, pager=self.pager_url, **paths) for n in names
        ]

    @staticmethod
    def lines(path: Path) -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    def triggers(self) -> list[dict[str, Any]]:
        return [e for e in self.pager.events if e["event_action"] == "trigger"]

    def pages(self) -> list[tuple[str, str]]:
        """(source, dedup_key) of every trigger the pager accepted."""
        return [(e["payload"]["source"], e["dedup_key"]) for e in self.triggers()]


@asynccontextmanager
async def world(tmp: Path) -> AsyncIterator[World]:
    pager = FakePagerDuty()
    async with serve(pager.app) as url:
        the_world = World(tmp, pager, url)
        try:
            yield the_world
        finally:
            the_world.release.touch()  # a `hold` left behind by a killed replica ends now


@asynccontextmanager
async def alertmanager(running: list[Replica]) -> AsyncIterator[AlertmanagerServer]:
    """A real Alertmanager sending every alert to every replica; it repeats a firing alert
    every 2 s, so the replicas see real repeats (and, after a failover, the new leader
    gets the alert again)."""
    urls = [f"{r.url}/api/v1/alerts" for r in running]
    async with alertmanager_server(
        urls, group_wait="200ms", group_interval="1s", repeat_interval="2s"
    ) as am:
        yield am


def firing(starts: datetime) -> dict[str, Any]:
    return {
        "labels": ALERT,
        "annotations": {"summary": "5xx above 5% on web"},
        "startsAt": starts.isoformat(),
    }


def resolved(starts: datetime) -> dict[str, Any]:
    return firing(starts) | {"endsAt": datetime.now(UTC).isoformat()}


async def until(what: str, condition: Callable[[], Awaitable[bool] | bool], within: float) -> float:
    """Poll real processes until `condition` holds, bounded; the seconds it took."""
    start = time.monotonic()
    while True:
        got = condition()
        if not isinstance(got, bool):
            got = await got
        if got:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            pytest.fail(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(0.05)


async def incidents(dsn: str) -> list[tuple[str, str]]:
    rows = await query(dsn, "SELECT id, status FROM incidents ORDER BY opened_at")
    return [(r["id"], r["status"]) for r in rows]


async def ledger(dsn: str) -> list[tuple[str, str, str]]:
    rows = await query(dsn, "SELECT incident_id, remediation, outcome FROM actions ORDER BY id")
    return [(r["incident_id"], r["remediation"], r["outcome"]) for r in rows]


async def timeline(dsn: str, kind: str) -> list[str]:
    rows = await query(dsn, "SELECT message FROM timeline WHERE kind = $1 ORDER BY id", kind)
    return [r["message"] for r in rows]


async def leader_among(session: aiohttp.ClientSession, running: list[Replica]) -> Replica | None:
    found = [
        r
        for r, role in zip(running, await roles(session, running), strict=True)
        if role == "leader"
    ]
    assert len(found) <= 1, f"two leaders at once: {[r.name for r in found]}"
    return found[0] if found else None


async def accepted(session: aiohttp.ClientSession, running: list[Replica]) -> float:
    """Alert notifications the replicas have accepted (2xx), all together."""
    total = 0.0
    for r in running:
        if r.proc.poll() is None:
            labels = {"route": "/api/v1/alerts", "code_class": "2xx"}
            total += await metric_sum(session, r.url, "runbookd_api_requests_total", labels)
    return total


async def all_resolved(dsn: str) -> bool:
    found = await incidents(dsn)
    return bool(found) and all(status == "resolved" for _, status in found)


async def more(value: Awaitable[float], than: float) -> bool:
    return await value > than


def report(message: str) -> None:
    print(f"\n{message}")  # shown with -s: the measured figures


# -- 1. one episode, three replicas, every alert delivered to each -------------------------


async def test_three_replicas_one_incident_one_action_one_page(tmp_path: Path, dsn: str) -> None:
    async with world(tmp_path) as w, aiohttp.ClientSession() as session:
        with replicas(w.files(dsn, plan("[note, page]"))) as running:
            assert await roles(session, running) == ["leader", "standby", "standby"]
            async with alertmanager(running) as am:
                starts = datetime.now(UTC)
                await post_alerts(session, am, [firing(starts)])
                took = await until("an action and a page", lambda: bool(w.pages()), within=15)
                report(f"alert posted to Alertmanager -> action and page: {took:.2f}s")
                # Alertmanager sends it again (a repeat, or a retry to a replica that refused
                # it): one more accepted after the action, then the resolution.
                base = await accepted(session, running)
                await until("a repeat", lambda: more(accepted(session, running), base), within=30)
                await post_alerts(session, am, [resolved(starts)])
                took = await until("the incident resolved", lambda: all_resolved(dsn), within=30)
                report(f"resolution posted -> incident resolved: {took:.2f}s")
        ((incident, _),) = await incidents(dsn)
        assert w.lines(w.runs) == [f"a {incident}"]
        assert w.pages() == [("a", incident)]
        resolves = [e["dedup_key"] for e in w.pager.events if e["event_action"] == "resolve"]
        assert resolves == [incident]
        assert await ledger(dsn) == [(incident, "note", "ok"), (incident, "page", "ok")]


# -- 2. kill -9 of the leader while it acts ------------------------------------------------

HOLD_THEN_ESCALATE = plan("[hold, note]", escalate="[page]")


async def takeover(session: aiohttp.ClientSession, rest: list[Replica]) -> Replica:
    """The replica among `rest` that leads, once one does (bounded)."""
    found: list[Replica] = []

    async def one_leads() -> bool:
        leader = await leader_among(session, rest)
        found[:] = [leader] if leader is not None else []
        return bool(found)

    await until("a standby leading", one_leads, within=TTL + 10)
    return found[0]


async def test_kill_9_of_the_leader_mid_action_is_not_repeated(tmp_path: Path, dsn: str) -> None:
    async with world(tmp_path) as w, aiohttp.ClientSession() as session:
        with replicas(w.files(dsn, HOLD_THEN_ESCALATE)) as running:
            old, rest = running[0], running[1:]
            async with alertmanager(running) as am:
                await post_alerts(session, am, [firing(datetime.now(UTC))])
                await until("the leader acting", lambda: bool(w.lines(w.held)), within=15)
                old.proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                old.proc.wait(timeout=10)
                new = await takeover(session, rest)
                took = time.monotonic() - killed
                report(f"kill -9 mid-action -> {new.name} leads: {took:.2f}s (lease {TTL:g}s)")
                assert took <= TTL + CHECK_INTERVAL + SLACK, f"took over after {took:.2f}s"
                await until("the escalation's page", lambda: bool(w.pages()), within=15)
                # The alert reaches the new leader again (a repeat or a retry): no new episode.
                base = await accepted(session, rest)
                await until("a repeat", lambda: more(accepted(session, rest), base), within=30)
                w.release.touch()  # the killed replica's `hold` ends (its effect is unknown)
        ((incident, status),) = await incidents(dsn)
        assert status == "open"
        assert w.lines(w.held) == [f"a {incident}"]  # run once, by the old leader
        assert w.lines(w.runs) == []  # after an interrupted step the plan escalates
        assert w.pages() == [(new.name, incident)]
        assert await ledger(dsn) == [(incident, "hold", "interrupted"), (incident, "page", "ok")]
        (interrupted,) = await timeline(dsn, "interrupted")
        assert "hold was running" in interrupted
        assert "not repeated" in interrupted


# -- 3. the leader paused past its lease, then resumed -------------------------------------


async def test_a_leader_paused_past_its_lease_acts_on_nothing_and_exits(
    tmp_path: Path, dsn: str
) -> None:
    async with world(tmp_path) as w, aiohttp.ClientSession() as session:
        with replicas(w.files(dsn, HOLD_THEN_ESCALATE)) as running:
            old, rest = running[0], running[1:]
            async with alertmanager(running) as am:
                starts = datetime.now(UTC)
                await post_alerts(session, am, [firing(starts)])
                await until("the leader acting", lambda: bool(w.lines(w.held)), within=15)
                old.proc.send_signal(signal.SIGSTOP)
                paused = time.monotonic()
                new = await takeover(session, rest)
                took = time.monotonic() - paused
                report(f"SIGSTOP mid-action -> {new.name} leads: {took:.2f}s (lease {TTL:g}s)")
                assert took <= TTL + CHECK_INTERVAL + SLACK, f"took over after {took:.2f}s"
                await until("the escalation's page", lambda: bool(w.pages()), within=15)
                # The paused leader's `hold` finishes while it sleeps: when it wakes, its next
                # step (`note`) must not run, and it must give up the lead.
                w.release.touch()
                await until("the paused leader's hold ending", lambda: w.ended.exists(), 10)
                old.proc.send_signal(signal.SIGCONT)
                resumed = time.monotonic()
                code = await asyncio.to_thread(old.proc.wait, 20)
                took = time.monotonic() - resumed
                report(f"SIGCONT -> the old leader exited {code} after {took:.2f}s")
                assert code == LOST_LEASE, log_tail(old.log)
                assert await leader_among(session, rest) is new  # the new leader goes on
                # Had the old leader written the plan's progress on waking (`hold` done,
                # `note` next), the next leader would take it up: kill this one, the third
                # leads, and must not run `note` either.
                new.proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                new.proc.wait(timeout=10)
                (last,) = (r for r in rest if r is not new)
                assert await takeover(session, [last]) is last
                report(
                    f"kill -9 of {new.name} -> {last.name} leads: {time.monotonic() - killed:.2f}s"
                )
                await post_alerts(session, am, [resolved(starts)])
                await until("the incident resolved", lambda: all_resolved(dsn), within=30)
        ((incident, _),) = await incidents(dsn)
        assert w.lines(w.held) == [f"a {incident}"]
        assert w.lines(w.runs) == []  # not the old leader's `note`, nor anyone's
        assert w.pages() == [(new.name, incident)]
        resolves = [e["dedup_key"] for e in w.pager.events if e["event_action"] == "resolve"]
        assert resolves == [incident]  # by the third replica
        assert await ledger(dsn) == [(incident, "hold", "interrupted"), (incident, "page", "ok")]


# -- 4. the database unreachable for a while, mid-incident ---------------------------------

# As long as the "PostgreSQL restarted for 30 s": 15 lease ttls. It costs little:
# the page's retry is due 30 s after its first attempt (the outbox's first backoff) anyway.
OUTAGE = 30.0


def through(proxy: TcpProxy, dsn: str) -> str:
    """`dsn` with its host and port replaced by the proxy's."""
    parts = urlsplit(dsn)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def logged(replica: Replica, text: str) -> Callable[[], bool]:
    return lambda: text in replica.log.read_text(errors="replace")


async def test_the_database_gone_for_30s_mid_incident_nothing_twice_nothing_lost(
    tmp_path: Path, dsn: str
) -> None:
    parts = urlsplit(dsn)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        async with world(tmp_path) as w, aiohttp.ClientSession() as session:
            rules = plan("[page, hold, note]")
            with replicas(w.files(through(proxy, dsn), rules)) as running:
                old, rest = running[0], running[1:]
                async with alertmanager(running) as am:
                    # The first page fails: it waits in the outbox for its retry.
                    w.pager.fail_next(500)
                    await post_alerts(session, am, [firing(datetime.now(UTC))])
                    await until("the leader acting", lambda: bool(w.lines(w.held)), within=15)
                    assert w.pages() == []  # refused once, queued
                    proxy.cut()
                    cut = time.monotonic()
                    took = await until(
                        "the leader stepping down", logged(old, "stepping down"), TTL + 5
                    )
                    report(f"database cut -> the leader stepped down after {took:.2f}s")
                    assert took <= TTL + CHECK_INTERVAL + SLACK
                    # Its action ends while it cannot record the end: it must do nothing more.
                    w.release.touch()
                    code = await asyncio.to_thread(old.proc.wait, 20)
                    report(
                        f"the old leader exited {code} {time.monotonic() - cut:.2f}s after the cut"
                    )
                    assert code == LOST_LEASE, log_tail(old.log)
                    assert await roles(session, rest) == ["standby", "standby"]
                    await asyncio.sleep(max(0.0, cut + OUTAGE - time.monotonic()))  # the outage
                    assert await roles(session, rest) == ["standby", "standby"]
                    proxy.restore()
                    restored = time.monotonic()
                    new = await takeover(session, rest)
                    report(f"database back -> {new.name} leads: {time.monotonic() - restored:.2f}s")
                    await until("the queued page", lambda: bool(w.pages()), within=15)
                    took = time.monotonic() - restored
                    report(f"database back -> the queued page delivered: {took:.2f}s")
        ((incident, status),) = await incidents(dsn)
        assert status == "open"
        assert w.lines(w.held) == [f"a {incident}"]  # not repeated
        assert w.lines(w.runs) == []  # nobody went on past the interrupted step
        assert w.pages() == [(new.name, incident)]  # delivered once, after the outage
        assert [e.body["payload"]["source"] for e in w.pager.received] == ["a", new.name]
        # The page refused before the cut, the action the cut interrupted, the page retried.
        assert await ledger(dsn) == [
            (incident, "page", "failed"),
            (incident, "hold", "interrupted"),
            (incident, "page", "ok"),
        ]
        (interrupted,) = await timeline(dsn, "interrupted")
        assert "hold was running" in interrupted
