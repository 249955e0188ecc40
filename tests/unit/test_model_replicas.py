"""A model-based test of several replicas on one database (issue 14): Hypothesis interleaves
observations and alerts, remediations and a scheduled job's action that hang and return, time,
renewals, pauses (SIGSTOP, also in the middle of a store transaction), kill -9 and restarts, a
database that goes down and a replica cut off from it, with the replicas' clocks offset and
running a little fast or slow, over the real Leadership, engine, pipeline, job runner and fence
(tests/replica_world.py), and checks:

1. One holder per epoch: no two processes ever act under the same epoch.
2. At any instant at most one process may act (`may_act()`), checked at every timer: two
   overlap only while a slow clock's lease outlives the store's, by at most ttl x its drift.
3. Every action in the ledger, and every job run that acts, was claimed in a transaction that
   found its epoch current, and the lease still had that epoch when it committed; the
   ledger's epochs never go down.
4. Every remediation or job action called (the fake target's side) came from the holder of
   the lease that is current on the store's clock at that instant.
5. No step runs twice for an incident: one ledger row and at most one call per incident and
   remediation (pages excepted: they are redelivered and deduplicated at the provider); an
   interrupted step is recorded, not repeated; no call without its ledger row; a job's
   scheduled time runs once.
6. The timeline and the ledger agree; one open incident per rule in the store.
7. Epochs only grow: the lease's, and each new leader's above every earlier one.

`make check` runs a fixed set of examples; `make soak` thousands from a random seed.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from structlog.testing import capture_logs

from daemon.core.clock import ManualClock
from daemon.engine.alerts import Alert
from tests.model_world import (
    ALERT_NAME,
    BAD,
    GOOD,
    Fake,
    advance,
    observation,
    quiesce,
)
from tests.replica_world import (
    TTL,
    Database,
    Process,
    Slot,
    StoreDown,
    finished,
    make_targets,
)

EXAMPLES = int(os.environ.get("SOAK_EXAMPLES", "0"))
NAMES = ("a", "b", "c")
NOTIFIERS = frozenset({"page"})
ACTIONS = ("rollback", "restart", "flush", "backup")
# Around the lease (ttl 9 s, renewed every 3 s), and the rules' and remediations' times.
STEPS = (0.5, 1.0, 3.0, 4.5, 9.0, 10.0, 31.0, 45.0, 125.0)
OFFSETS = (0.0, -2.5, 4.0)
RATES = (1.0, 1.0, 0.99, 1.01)


class Invariants:
    """What is checked at every timer (1, 2, 7) and after every step (all)."""

    def __init__(self, db: Database, slots: dict[str, Slot]) -> None:
        self.db = db
        self.slots = slots
        self.holder_of: dict[int, str] = {}  # epoch -> the one process that acted under it
        self.store_epoch = 0

    def processes(self) -> list[Process]:
        """Every process not dead: running, paused or stopping."""
        found = [s.process for s in self.slots.values() if s.process is not None]
        return [p for p in found if not p.store.dead]

    def instant(self) -> bool:
        now = self.db.clock.now()
        acting = [p for p in self.processes() if p.leadership.may_act()]
        for p in acting:
            epoch = p.leadership.acting_epoch()
            assert epoch is not None
            if epoch not in self.holder_of:
                earlier = max(self.holder_of, default=0)
                assert epoch > earlier, f"7: {p.holder} leads with epoch {epoch} after {earlier}"
                self.holder_of[epoch] = p.holder
            holder = self.holder_of[epoch]
            assert holder == p.holder, f"1: epoch {epoch} acted on by {holder} and {p.holder}"
        if len(acting) > 1:
            for p in acting:
                if self.db.current(p.holder, p.leadership.epoch):
                    continue
                expired = self.db.expired.get(p.leadership.epoch or 0, float("-inf"))
                slack = TTL * (1 / p.clock.rate - 1) + 1e-6 if p.clock.rate < 1 else 1e-6
                assert now - expired <= slack, (
                    f"2: {[q.holder for q in acting]} may act at {now}; {p.holder}'s lease "
                    f"(epoch {p.leadership.epoch}) expired at {expired} on the store's clock "
                    f"(its clock's rate {p.clock.rate})"
                )
        lease = self.db.lease()
        if lease is not None:
            assert lease[1] >= self.store_epoch, (
                f"7: the lease went from {self.store_epoch} to {lease}"
            )
            self.store_epoch = lease[1]
        return False

    def after_step(self) -> None:
        self.instant()
        db = self.db
        assert not db.violations, "3/4: " + "\n".join(db.violations)
        actions = sorted(db.data.actions.values(), key=lambda a: a.id)
        epochs = [db.claims[a.id][1] for a in actions if a.id in db.claims]
        unclaimed = [a for a in actions if a.id not in db.claims]
        assert not unclaimed, f"3: actions in the ledger nobody claimed: {unclaimed}"
        assert epochs == sorted(epochs), f"3: ledger claims' epochs go down: {epochs}"
        rows = Counter((a.incident_id, a.remediation) for a in actions)
        twice = {k: n for k, n in rows.items() if n > 1 and k[1] not in NOTIFIERS}
        assert not twice, f"5: steps claimed twice: {twice}"
        calls = Counter((c.incident, c.remediation) for c in db.calls if c.phase == "execute")
        twice = {k: n for k, n in calls.items() if n > 1 and k[1] not in NOTIFIERS}
        assert not twice, f"5: steps run twice: {twice} ({db.calls})"
        by_name = Counter(a.remediation for a in actions)
        executed = Counter(
            c.remediation
            for c in db.calls
            if c.phase == "execute" and not c.incident.startswith("job-")
        )
        for name, n in executed.items():
            assert n <= by_name[name], f"5: {name} called {n} times, {by_name[name]} in the ledger"
        said: Counter[tuple[str, str]] = Counter()
        for incident in db.data.incidents.values():
            crashed = [e.message for e in incident.timeline if e.kind == "error"]
            assert not crashed, f"7: a plan stopped on an internal error: {crashed}"
            for e in incident.timeline:
                if e.kind == "action":
                    said[(incident.id, str(e.data.get("remediation")))] += 1
        assert said == rows, f"6: timeline 'action' entries {dict(said)} != ledger {dict(rows)}"
        runs = [r for r in db.data.job_runs.values() if r.started_at is not None]
        unclaimed_runs = [r for r in runs if r.id not in db.run_claims]
        assert not unclaimed_runs, f"3: job runs nobody claimed: {unclaimed_runs}"
        slots = Counter((r.job, r.scheduled_at) for r in runs if r.trigger != "manual")
        again = {k: n for k, n in slots.items() if n > 1}
        assert not again, f"5: scheduled job runs run twice: {again}"
        open_by_rule = Counter(i.rule for i in db.data.incidents.values() if i.is_open)
        assert all(n == 1 for n in open_by_rule.values()), f"6: open per rule {open_by_rule}"


class ReplicasMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.logs = capture_logs()
        self.logs.__enter__()
        self.clock = ManualClock()
        self.db = Database(self.clock)
        self.fakes: dict[str, Fake] = make_targets()
        self.slots: dict[str, Slot] = {}
        self.check = Invariants(self.db, self.slots)
        self.episode: float | None = None  # the alert's episode start, while it fires

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        async def step() -> Any:
            result = await finished(asyncio.create_task(coro))
            await quiesce()
            return result

        return self.runner.run(step())

    def teardown(self) -> None:
        async def down() -> None:
            for slot in self.slots.values():
                await slot.kill()

        try:
            self.run(down())
        finally:
            self.runner.close()
            self.logs.__exit__(None, None, None)

    @initialize(
        n=st.sampled_from([2, 3]),
        offsets=st.lists(st.sampled_from(OFFSETS), min_size=3, max_size=3),
        rates=st.lists(st.sampled_from(RATES), min_size=3, max_size=3),
        modes=st.lists(st.sampled_from(["ok", "hang", "hang", "fail"]), min_size=4, max_size=4),
    )
    def boot(self, n: int, offsets: list[float], rates: list[float], modes: list[str]) -> None:
        for name, mode in zip(ACTIONS, modes, strict=True):
            self.fakes[name].mode = mode

        async def start() -> None:
            for name, offset, rate in zip(NAMES[:n], offsets, rates, strict=False):
                slot = self.slots[name] = Slot(name, self.db, self.fakes, offset, rate)
                slot.start()
                await quiesce()

        self.run(start())

    # -- helpers -------------------------------------------------------------------------------

    def _pick(self, index: int) -> Slot:
        names = sorted(self.slots)
        return self.slots[names[index % len(names)]]

    def _receivers(self) -> list[Process]:
        """Who takes signals: a process that acts (its scheduler runs; a standby answers 503
        to intake), and is not paused."""
        return [p for p in self.check.processes() if p.acting and not p.paused]

    async def _deliver(self, p: Process, coro: Coroutine[Any, Any, Any]) -> None:
        """Into one process, as its own task: a store that fails it is its business."""
        task = p.spawn(coro, "intake")
        await quiesce()
        failed = task.done() and not task.cancelled() and task.exception() is not None
        if failed and not isinstance(exc := task.exception(), StoreDown):
            raise exc  # type: ignore[misc]

    async def _advance(self, seconds: float) -> None:
        await advance(self.clock, seconds, stop=self.check.instant)
        for p in self._receivers():  # the leader's engine ticks every second
            await self._deliver(p, p.tick())

    # -- signals ---------------------------------------------------------------------------

    @rule(seconds=st.sampled_from(STEPS))
    def wait(self, seconds: float) -> None:
        self.run(self._advance(seconds))

    async def _observe(self, check: str, value: float | None) -> None:
        for p in self._receivers():
            await self._deliver(p, p.engine.observe(observation(check, value, p.clock.now())))

    async def _alert(self, firing: bool) -> None:
        now = self.clock.now()
        if firing and self.episode is None:
            self.episode = now
        if self.episode is None:
            return
        alert = Alert(
            ALERT_NAME,
            firing,
            "a",
            {"alertname": ALERT_NAME, "instance": "a"},
            starts_at=self.episode,
            ends_at=None if firing else now,
        )
        if not firing:
            self.episode = None
        for p in self._receivers():  # Alertmanager sends to every replica
            await self._deliver(p, p.engine.alerts([alert]))

    async def _signal(self, kind: str) -> None:
        if kind == "app_bad":  # the errors rule: for 2s over two samples
            await self._observe("app", BAD)
            await self._advance(2.0)
            await self._observe("app", BAD)
        elif kind == "alert_fires":
            await self._alert(True)
        elif kind == "alert_resolves":
            await self._alert(False)
        else:
            check, value = kind.split("_")
            await self._observe(check, {"bad": BAD, "good": GOOD, "unknown": None}[value])

    @rule(
        kind=st.sampled_from(
            [
                *("app_bad", "app_bad", "api_bad", "alert_fires", "alert_fires"),
                *("alert_resolves", "app_good", "api_good", "app_unknown"),
            ]
        )
    )
    def signal(self, kind: str) -> None:
        """A check's observation, or Alertmanager's request, to every process that takes it."""
        self.run(self._signal(kind))

    @rule(name=st.sampled_from(ACTIONS), mode=st.sampled_from(["ok", "fail", "hang"]))
    def remediation_behaves(self, name: str, mode: str) -> None:
        self.fakes[name].mode = mode

    @rule(mode=st.sampled_from(["up", "down", "hang"]))
    def pager_behaves(self, mode: str) -> None:
        self.fakes["page"].mode = mode

    async def _release(self, ok: bool) -> None:
        for fake in self.fakes.values():
            fake.release(ok)

    @precondition(lambda self: any(f.hanging for f in self.fakes.values()))
    @rule(ok=st.booleans())
    def remediations_complete(self, ok: bool) -> None:
        self.run(self._release(ok))

    # -- the replicas ----------------------------------------------------------------------

    @rule(index=st.integers(0, 2))
    def renews(self, index: int) -> None:
        p = self._pick(index).live
        if p is not None and not p.paused:
            self.run(self._deliver(p, p.leadership.renew()))

    @rule(index=st.integers(0, 2), trips=st.sampled_from([None, 0, 1, 2, 3, 5, 8]))
    def pauses(self, index: int, trips: int | None) -> None:
        """SIGSTOP now, or at its store trip `trips` from now (inside a transaction, say)."""
        p = self._pick(index).live
        if p is None:
            return
        if trips is None:
            p.pause()
        else:
            p.trap_at = trips

    @precondition(lambda self: any(p.paused for p in self.check.processes()))
    @rule(index=st.integers(0, 2), check_first=st.booleans())
    def resumes(self, index: int, check_first: bool) -> None:
        """SIGCONT; with `check_first`, a check's observation gets in before its renewal."""
        paused = [p for p in self.check.processes() if p.paused]
        p = paused[index % len(paused)]

        async def go() -> None:
            p.unpause()
            if check_first and p.acting:  # its check's timer, before what it waited for
                value = observation("app", BAD, p.clock.now())
                await self._deliver(p, p.engine.observe(value))
            p.flush()

        self.run(go())

    def _leader(self) -> Slot | None:
        for slot in self.slots.values():
            if (p := slot.live) is not None and p.acting:
                return slot
        return None

    @precondition(lambda self: self._leader() is not None)
    @rule(
        how=st.sampled_from(["kill", "pause", "trap"]),
        seconds=st.sampled_from([0.0, 4.5, 10.0, 20.0]),
    )
    def leader_fails(self, how: str, seconds: float) -> None:
        """The acting process is killed or paused (now, or at its next store trip); then time
        passes."""
        slot = self._leader()
        if slot is None or (p := slot.live) is None:
            return
        if how == "kill":
            self.run(slot.kill())
        elif how == "pause":
            p.pause()
        else:
            p.trap_at = 0
        self.run(self._advance(seconds))

    @rule(index=st.integers(0, 2))
    def killed(self, index: int) -> None:
        self.run(self._pick(index).kill())

    @precondition(lambda self: any(s.supervisor is None for s in self.slots.values()))
    @rule(index=st.integers(0, 2))
    def restarted(self, index: int) -> None:
        """systemd starts a replica killed before."""
        down = [s for s in self.slots.values() if s.supervisor is None]
        slot = down[index % len(down)]

        async def go() -> None:
            slot.start()
            await quiesce()

        self.run(go())

    @rule(
        whom=st.sampled_from(["database", 0, 1, 2]), seconds=st.sampled_from([1.0, 4.5, 10.0, 20.0])
    )
    def store_unavailable(self, whom: str | int, seconds: float) -> None:
        """The database is down, or one process is cut off from it, for a while."""
        cut = None if isinstance(whom, str) else self._pick(whom).live
        if cut is not None:
            cut.cut = True
        else:
            self.db.down = True
        self.run(self._advance(seconds))
        self.db.down = False
        if cut is not None:
            cut.cut = False

    @invariant()
    def one_actor(self) -> None:
        self.check.after_step()


PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)


def machine_settings() -> settings:
    if EXAMPLES:
        return settings(
            max_examples=EXAMPLES,
            stateful_step_count=60,
            deadline=None,
            print_blob=True,
            phases=PHASES,
            suppress_health_check=list(HealthCheck),
        )
    return settings(
        max_examples=100,
        stateful_step_count=40,
        deadline=None,
        derandomize=True,  # `make check`: the same examples every run
        database=None,
        print_blob=True,
        phases=PHASES,
        suppress_health_check=list(HealthCheck),
    )


@pytest.mark.timeout(0 if EXAMPLES else 120)
def test_one_actor_per_epoch_under_every_interleaving() -> None:
    run_state_machine_as_test(ReplicasMachine, settings=machine_settings())


def test_a_resolution_waits_for_the_opening_still_being_written() -> None:
    """Found by a soak (seed 99): a paused replica's engine was opening a "monitoring blind"
    incident (its store write suspended) when, resumed, an observation resolved it: the store
    had no such incident yet (KeyError). A resolution now waits for the opening's write."""
    state = ReplicasMachine()
    try:
        state.boot(
            n=3, rates=[1.0, 1.0, 1.0], modes=["ok", "hang", "ok", "ok"], offsets=[-2.5, 0.0, 0.0]
        )
        state.one_actor()
        state.pauses(index=0, trips=2)
        state.one_actor()
        state.signal(kind="alert_resolves")
        state.one_actor()
        state.wait(seconds=3.0)
        state.one_actor()
        state.signal(kind="app_bad")
        state.one_actor()
        state.resumes(check_first=True, index=0)
        state.one_actor()
        state.signal(kind="alert_fires")
        state.one_actor()
        state.pauses(index=2, trips=0)
        state.one_actor()
        state.signal(kind="app_bad")
        state.one_actor()
        state.pauses(index=1, trips=None)
        state.one_actor()
        state.signal(kind="app_bad")
        state.one_actor()
        state.wait(seconds=0.5)
        state.one_actor()
        state.signal(kind="alert_resolves")
        state.one_actor()
        state.wait(seconds=0.5)
        state.one_actor()
        state.pauses(index=0, trips=None)
        state.one_actor()
        state.wait(seconds=0.5)
        state.one_actor()
        state.pauses(index=0, trips=None)
        state.one_actor()
        state.wait(seconds=31.0)
        state.one_actor()
        state.signal(kind="api_good")
        state.one_actor()
        state.wait(seconds=45.0)
        state.one_actor()
        state.resumes(check_first=True, index=0)
        state.one_actor()
        state.signal(kind="app_bad")
        state.one_actor()
        state.pauses(index=2, trips=8)
        state.one_actor()
        state.signal(kind="app_unknown")
        state.one_actor()
        state.signal(kind="app_bad")
        state.one_actor()
        state.pauses(index=1, trips=None)
        state.one_actor()
        state.wait(seconds=3.0)
        state.one_actor()
        state.wait(seconds=1.0)
        state.one_actor()
        state.resumes(check_first=False, index=0)
        state.one_actor()
        state.resumes(check_first=True, index=1)
        state.one_actor()
        state.wait(seconds=10.0)
        state.one_actor()
        state.pauses(index=2, trips=3)
        state.one_actor()
        state.wait(seconds=45.0)
        state.one_actor()
        state.pauses(index=0, trips=3)
        state.one_actor()
        state.pauses(index=1, trips=3)
        state.one_actor()
        state.pauses(index=1, trips=None)
        state.one_actor()
        state.resumes(check_first=True, index=2)
        state.one_actor()
        state.signal(kind="app_unknown")
        state.one_actor()
        state.resumes(check_first=False, index=2)
        state.one_actor()
        state.wait(seconds=3.0)
        state.one_actor()
        state.pauses(index=2, trips=8)
        state.one_actor()
        state.resumes(check_first=True, index=2)
    finally:
        state.teardown()
