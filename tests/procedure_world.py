"""A procedure runner on a memory store and a moved clock, with fake remediations, a fake
backup job and checks whose status a test sets (tests/unit/test_procedures.py and the
model-based tests/unit/test_model_procedures.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from daemon.core.clock import ManualClock
from daemon.core.models import Observation, Status
from daemon.jobs.config import JobConfig
from daemon.jobs.metrics import JobMetrics
from daemon.jobs.runner import JobRunner
from daemon.pipeline.approvals import Approvals
from daemon.pipeline.safety import TargetLocks
from daemon.procedures.config import ProcedureConfig
from daemon.procedures.metrics import ProcedureMetrics
from daemon.procedures.models import ProcedureRun
from daemon.procedures.runner import ProcedureRunner
from remediations.base import RemediationContext
from tests.memory_store import MemoryData, MemoryStore
from tests.world import FakeAction, FakeConfig

ACTIONS = ("backup", "maintenance_on", "maintenance_off", "migrate", "page")

MIGRATION = {
    "params": {"version": {"pattern": r"v\d+\.\d+\.\d+"}},
    "preconditions": ["database"],
    "steps": [
        {"name": "backup", "job": "nightly_backup"},
        {"name": "maintenance_on", "run": "maintenance_on", "undo": ["maintenance_off"]},
        {"name": "migrate", "run": "migrate", "timeout": "10m"},
        {"name": "maintenance_off", "run": "maintenance_off"},
        {"name": "healthy", "wait_for": "app", "timeout": "1m"},
    ],
    "on_failure": ["page"],
}


class Checks:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.status: dict[str, Status] = {"database": Status.OK, "app": Status.OK}
        self.seen: dict[str, Observation] = {}
        self.runs: list[str] = []

    def latest(self, check: str) -> Observation | None:
        return self.seen.get(check)

    def run_now(self, check: str) -> bool:
        self.runs.append(check)
        status = self.status[check]
        self.seen[check] = Observation(check, status, {}, self.clock.now(), reason="seen")
        return True


class Calls(list[str]):
    """A FakeAction's calls that also note the action's name in one shared order."""

    def __init__(self, name: str, order: list[str]) -> None:
        super().__init__()
        self.name, self.order = name, order

    def append(self, item: str) -> None:
        super().append(item)
        self.order.append(self.name)


class Harness:
    """One life of a daemon's procedure runner; another Harness on the same `data`, `clock`
    and `actions` is that daemon restarted."""

    def __init__(
        self,
        data: MemoryData | None = None,
        *,
        clock: ManualClock | None = None,
        actions: dict[str, FakeAction] | None = None,
        **procedure: Any,
    ) -> None:
        self.clock = clock = clock or ManualClock()
        self.data = data or MemoryData()
        self.store = MemoryStore(self.data)
        self.order: list[str] = []  # every remediation call, in order
        if actions is None:
            actions = {name: FakeAction(name) for name in ACTIONS}
            for action in actions.values():
                action.calls = Calls(action.name, self.order)
        self.actions = actions
        self.config = ProcedureConfig.model_validate(procedure or MIGRATION)
        self.approvals = Approvals(clock)
        self.checks = Checks(clock)
        self.checks.run_now("database")
        locks = TargetLocks()

        def actions(name: str) -> tuple[FakeAction, FakeConfig] | None:
            found = self.actions.get(name)
            return (found, FakeConfig()) if found else None

        ctx = RemediationContext(None, clock)  # type: ignore[arg-type]
        self.jobs = JobRunner(
            store=self.store,
            clock=clock,
            metrics=JobMetrics(CollectorRegistry()),
            sink=self._sink,
            actions=actions,
            ctx_for=lambda name: ctx,
            approvals=self.approvals,
            locks=locks,
        )
        self.runner = ProcedureRunner(
            store=self.store,
            clock=clock,
            metrics=ProcedureMetrics(CollectorRegistry()),
            procedures=lambda: {"migrate": self.config},
            actions=actions,
            jobs=self.jobs,
            checks=self.checks,
            ctx_for=lambda name: ctx,
            approvals=self.approvals,
            locks=locks,
        )

    async def _sink(self, obs: Observation) -> None:
        return None

    async def open(self) -> Harness:
        job = JobConfig(run="backup", schedule="0 2 * * *")
        await self.jobs.configure({"nightly_backup": job})
        await self.jobs.start()
        await self.runner.resume()
        return self

    async def stored(self, run_id: str) -> ProcedureRun:
        doc = await self.store.get_procedure_run(run_id)
        assert doc is not None
        return ProcedureRun.from_json(doc)

    async def close(self) -> None:
        await self.runner.stop()
        await self.jobs.stop()
