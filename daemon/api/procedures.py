"""Procedures over HTTP: list them, start a run (`runbookd procedure run`), follow runs, approve
or reject the step a run waits on, cancel a run. Starting, answering and cancelling are acts
(api/acts.py): a standby hands them to the leader, which runs procedures."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from daemon.api.acts import perform
from daemon.api.auth import acting
from daemon.api.bodies import json_error, json_response, read_json
from daemon.api.operator import query_limit
from daemon.api.port import DaemonView
from daemon.api.routes import Handler
from daemon.api.schemas import RunBody, Who
from daemon.procedures.config import ProcedureConfig
from daemon.procedures.models import RunStatus


def procedure_handlers(daemon: DaemonView) -> dict[str, Handler]:
    """The procedure routes' handlers, by operation id (routes.OPERATIONS)."""

    async def listing(request: web.Request) -> web.Response:
        procedures = daemon.config.procedures
        return json_response({"procedures": [describe(n, p) for n, p in procedures.items()]})

    async def start(request: web.Request) -> web.Response:
        body = await read_json(request, RunBody)
        args = {
            "procedure": request.match_info["name"],
            "params": body.params,
            "by": acting(request, body.by),
        }
        return await perform(daemon, "startProcedure", args)

    async def runs(request: web.Request) -> web.Response:
        status = request.query.get("status")
        if status is not None and status not in set(RunStatus):
            choices = ", ".join(s.value for s in RunStatus)
            return json_error(400, f"status: must be one of {choices}")
        found = await daemon.store.list_procedure_runs(
            procedure=request.query.get("procedure"), status=status, limit=query_limit(request)
        )
        return json_response({"runs": [summary(doc) for doc in found]})

    async def one(request: web.Request) -> web.Response:
        run_id = request.match_info["id"]
        doc = await daemon.store.get_procedure_run(run_id)
        if doc is None:
            return json_error(404, f"no procedure run {run_id!r}")
        return json_response(doc)

    async def decide(request: web.Request, approved: bool) -> web.Response:
        who = await read_json(request, Who)
        args = {"incident": request.match_info["id"], "approved": approved}
        args |= {"subject": "procedure run"}
        return await perform(
            daemon, "decide", args | {"by": acting(request, who.by), "reason": who.reason}
        )

    async def approve(request: web.Request) -> web.Response:
        return await decide(request, True)

    async def reject(request: web.Request) -> web.Response:
        return await decide(request, False)

    async def cancel(request: web.Request) -> web.Response:
        who = await read_json(request, Who)
        args = {"run": request.match_info["id"], "by": acting(request, who.by)}
        args["reason"] = who.reason
        return await perform(daemon, "cancelProcedure", args)

    return {
        "listProcedures": listing,
        "startProcedure": start,
        "listProcedureRuns": runs,
        "getProcedureRun": one,
        "approveRunStep": approve,
        "rejectRunStep": reject,
        "cancelProcedureRun": cancel,
    }


def describe(name: str, procedure: ProcedureConfig) -> dict[str, Any]:
    return {
        "name": name,
        "description": procedure.description,
        "params": {
            key: {"description": p.description, "default": p.default, "pattern": p.pattern}
            for key, p in procedure.params.items()
        },
        "preconditions": list(procedure.preconditions),
        "steps": [
            {"name": s.name, "kind": s.kind, "target": s.target, "undo": list(s.undo)}
            for s in procedure.steps
        ],
        "on_failure": list(procedure.on_failure),
    }


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in doc.items() if key != "timeline"}
