"""The console's jobs: every scheduled job with its schedule, next and last run and outcome, a
button to run one now; a job's page with its recent runs, each with its duration, outcome and
report (what the run recorded: a backup's size, checksum and row counts, a restore drill's
times against the RTO and RPO and what it verified). The same acts as GET /api/v1/jobs and
POST /api/v1/jobs/{name}/run; the runs are read from the store, which every replica reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from daemon.api.acts import answer
from daemon.api.routes import Handler
from daemon.store.protocol import JobRun
from daemon.ui import facts
from daemon.ui.responses import see_other
from daemon.ui.views import listed

if TYPE_CHECKING:
    from daemon.ui.pages import Console

PAGE = "/ui/jobs"
RECENT_RUNS = 50  # a job's page: its newest runs


@dataclass(frozen=True, slots=True)
class RunView:
    """A run as its page shows it."""

    run: JobRun
    duration: float | None  # None: never started, or goes on
    report: list[facts.Fact]

    @classmethod
    def of(cls, run: JobRun) -> RunView:
        started, ended = run.started_at, run.ended_at
        duration = ended - started if started is not None and ended is not None else None
        return cls(run, duration, facts.facts(run.data))


class JobPages:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.daemon = console.daemon

    def handlers(self) -> dict[str, Handler]:
        return {"uiJobs": self.listing, "uiJob": self.job, "uiJobRun": self.run_now}

    async def listing(self, request: web.Request) -> web.StreamResponse:
        session = self.console.viewer(request)
        jobs = await listed(self.daemon, "listJobs", "jobs")  # the leader's, on a standby
        context = {"session": session, "jobs": jobs.items, "error": jobs.error}
        return self.console.page(request, "jobs.html", context)

    async def job(self, request: web.Request) -> web.StreamResponse:
        session = self.console.viewer(request)
        name = request.match_info["name"]
        if name not in self.daemon.config.jobs:
            return self.console.refused(request, 404, f"no job {name!r}")
        jobs = await listed(self.daemon, "listJobs", "jobs")
        found: dict[str, Any] | None = next((j for j in jobs.items if j["name"] == name), None)
        runs = await self.daemon.store.job_runs(name, RECENT_RUNS)
        context = {
            "session": session,
            "name": name,
            "config": self.daemon.config.jobs[name],
            "job": found,
            "error": jobs.error,
            "runs": [RunView.of(r) for r in runs],
            "going_on": (found is not None and found["running"])
            or any(r.started_at is not None and r.outcome is None for r in runs),
        }
        return self.console.page(request, "job.html", context)

    async def run_now(self, request: web.Request) -> web.StreamResponse:
        got = await self.console.form(request, need_write=True)
        if isinstance(got, web.Response):
            return got
        session, _ = got
        name = request.match_info["name"]
        session.tell(await answer(self.daemon, "runJob", {"job": name}), f"started a run of {name}")
        return see_other(f"{PAGE}/{name}" if name in self.daemon.config.jobs else PAGE)
