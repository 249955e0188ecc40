"""The console's procedures: each procedure with a form to start a run (its parameters), the
recent runs, and a run's page (its steps and timeline, refreshed while it runs) with buttons to
approve or reject the step it waits on and to cancel it. The same acts as POST
/api/v1/procedures/{name}/runs and /api/v1/procedure-runs/{id}/approve|reject|cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from daemon.api.acts import answer
from daemon.api.procedures import describe, summary
from daemon.api.routes import Handler
from daemon.ui.responses import see_other

if TYPE_CHECKING:
    from daemon.ui.pages import Console

PAGE = "/ui/procedures"
PARAM = "param."  # a start form's field for the parameter NAME is `param.NAME`
# A run's buttons: the act each answers with, and its arguments beyond who and why.
RUN_ACTS: dict[str, tuple[str, dict[str, Any]]] = {
    "approve": ("decide", {"approved": True, "subject": "procedure run"}),
    "reject": ("decide", {"approved": False, "subject": "procedure run"}),
    "cancel": ("cancelProcedure", {}),
}


class ProcedurePages:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.daemon = console.daemon

    def handlers(self) -> dict[str, Handler]:
        return {
            "uiProcedures": self.listing,
            "uiProcedureStart": self.start,
            "uiProcedureRun": self.run,
            "uiProcedureRunAct": self.act,
        }

    async def listing(self, request: web.Request) -> web.StreamResponse:
        session = self.console.viewer(request)
        procedures = [describe(n, p) for n, p in self.daemon.config.procedures.items()]
        runs = await self.daemon.store.list_procedure_runs(limit=50)
        context = {"session": session, "procedures": procedures, "runs": [summary(r) for r in runs]}
        return self.console.page(request, "procedures.html", context)

    async def start(self, request: web.Request) -> web.StreamResponse:
        got = await self.console.form(request, need_write=True)
        if isinstance(got, web.Response):
            return got
        session, form = got
        params = {
            str(key).removeprefix(PARAM): str(value).strip()
            for key, value in form.items()
            if str(key).startswith(PARAM) and str(value).strip()
        }
        args = {"procedure": request.match_info["name"], "params": params, "by": session.name}
        done = await answer(self.daemon, "startProcedure", args)
        if done.status == 201:
            session.flash, session.flash_ok = f"started {done.body['id']}", True
            return see_other(f"/ui/procedure-runs/{done.body['id']}")
        session.flash, session.flash_ok = str(done.body.get("error")), False
        return see_other(PAGE)

    async def run(self, request: web.Request) -> web.StreamResponse:
        session = self.console.viewer(request)
        run_id = request.match_info["id"]
        found = await self.daemon.store.get_procedure_run(run_id)
        if found is None:
            return self.console.refused(request, 404, f"no procedure run {run_id!r}")
        pending = await answer(self.daemon, "listApprovals", {})  # the leader's, on a standby
        waiting = any(a["incident"] == run_id for a in pending.body.get("approvals", []))
        context = {"session": session, "run": found, "waiting": waiting}
        return self.console.page(request, "procedure_run.html", context)

    async def act(self, request: web.Request) -> web.StreamResponse:
        run_id, action = request.match_info["id"], request.match_info["action"]
        if action not in RUN_ACTS:
            return self.console.refused(request, 404, f"no action {action!r}")
        got = await self.console.form(request, need_write=True)
        if isinstance(got, web.Response):
            return got
        session, form = got
        reason = str(form.get("reason", "")).strip()[:2000]
        name, extra = RUN_ACTS[action]
        args = {"by": session.name, "reason": reason} | extra
        args |= {"incident": run_id} if name == "decide" else {"run": run_id}
        session.tell(await answer(self.daemon, name, args), f"{action}: done")
        return see_other(f"/ui/procedure-runs/{run_id}")
