"""The operator API: see and steer what runbookd does.

Incidents (list, one, acknowledge, resolve), approvals (list, approve, reject), silences
(list, create, expire), rules (states, reset a circuit) and checks (run one now). Every answer
is JSON; every bad request gets a 4xx with a reason naming the field.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from daemon.api.acts import perform
from daemon.api.auth import acting
from daemon.api.bodies import json_error, json_response, read_json
from daemon.api.port import DaemonView
from daemon.api.routes import Handler
from daemon.api.schemas import MAX_AHEAD, MAX_LIMIT, MAX_SILENCE, SilenceBody, Who
from daemon.core.models import IncidentStatus
from daemon.pipeline.silences import Silence, new_silence_id


def operator_handlers(daemon: DaemonView) -> dict[str, Handler]:
    """The operator routes' handlers, by operation id (routes.OPERATIONS)."""
    api = Operator(daemon)
    return {
        "openapi": serve_openapi,
        "listIncidents": api.list_incidents,
        "getIncident": api.get_incident,
        "acknowledgeIncident": api.acknowledge,
        "resolveIncident": api.resolve,
        "approveStep": api.approve,
        "rejectStep": api.reject,
        "listApprovals": api.list_approvals,
        "listSilences": api.list_silences,
        "createSilence": api.create_silence,
        "expireSilence": api.expire_silence,
        "listRules": api.list_rules,
        "resetCircuit": api.reset_circuit,
        "runCheck": api.run_check,
        "listChecks": api.list_checks,
        "listJobs": api.list_jobs,
        "listJobRuns": api.list_job_runs,
        "runJob": api.run_job,
        "reload": api.reload,
    }


async def serve_openapi(request: web.Request) -> web.Response:
    # The spec's module (its schemas, the document it builds) loads on the first request
    # for it: a daemon nobody asks for it never carries it.
    from daemon.api import openapi

    return await openapi.serve(request)


class Operator:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon

    # -- incidents ---------------------------------------------------------------------------

    async def list_incidents(self, request: web.Request) -> web.Response:
        query = request.query
        status: IncidentStatus | None = None
        if "status" in query:
            try:
                status = IncidentStatus(query["status"])
            except ValueError:
                choices = ", ".join(s.value for s in IncidentStatus)
                return json_error(400, f"status: must be one of {choices}")
        limit = query_limit(request)
        incidents = await self.daemon.store.list_incidents(
            status=status, rule=query.get("rule"), limit=limit
        )
        items: list[dict[str, Any]] = [i.to_json(with_timeline=False) for i in incidents]
        return json_response({"incidents": items})

    async def get_incident(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        incident = await self.daemon.store.get_incident(incident_id)
        if incident is None:
            return json_error(404, f"no incident {incident_id!r}")
        return json_response(incident.to_json())

    async def acknowledge(self, request: web.Request) -> web.Response:
        """Someone is on it: no more escalation for this incident."""
        return await self._about_incident(request, "acknowledge")

    async def resolve(self, request: web.Request) -> web.Response:
        return await self._about_incident(request, "resolve")

    # -- approvals ---------------------------------------------------------------------------

    async def approve(self, request: web.Request) -> web.Response:
        return await self._about_incident(request, "decide", approved=True)

    async def reject(self, request: web.Request) -> web.Response:
        return await self._about_incident(request, "decide", approved=False)

    async def _about_incident(self, request: web.Request, act: str, **extra: Any) -> web.Response:
        who = await read_json(request, Who)
        by = acting(request, who.by)
        args = {"incident": request.match_info["id"], "by": by, "reason": who.reason}
        return await perform(self.daemon, act, args | extra)

    async def list_approvals(self, request: web.Request) -> web.Response:
        return await perform(self.daemon, "listApprovals", {})

    # -- silences ----------------------------------------------------------------------------

    async def list_silences(self, request: web.Request) -> web.Response:
        # A typo ("?expired=ture") is an error, not a silent "false".
        expired = {"true": True, "1": True, "false": False, "0": False}.get(
            request.query.get("expired", "false").lower()
        )
        if expired is None:
            return json_error(400, "expired: must be true or false")
        return await perform(self.daemon, "listSilences", {"expired": expired})

    async def create_silence(self, request: web.Request) -> web.Response:
        body = await read_json(request, SilenceBody)
        silence = silence_from(body, self.daemon.clock.now(), acting(request, body.created_by))
        if isinstance(silence, str):
            return json_error(400, silence)
        return await perform(self.daemon, "createSilence", {"silence": asdict(silence)})

    async def expire_silence(self, request: web.Request) -> web.Response:
        return await perform(self.daemon, "expireSilence", {"silence": request.match_info["id"]})

    # -- rules and checks --------------------------------------------------------------------

    async def list_rules(self, request: web.Request) -> web.Response:
        return await perform(self.daemon, "listRules", {})

    async def reset_circuit(self, request: web.Request) -> web.Response:
        return await perform(self.daemon, "resetCircuit", {"rule": request.match_info["rule"]})

    async def run_check(self, request: web.Request) -> web.Response:
        return await perform(self.daemon, "runCheck", {"check": request.match_info["check"]})

    async def list_checks(self, request: web.Request) -> web.Response:
        # Strings as they came: the act parses them (and names a bad one), here or at the leader.
        keys = ("status", "match", "order", "offset", "limit", "history")
        return await perform(
            self.daemon, "listChecks", {k: request.query[k] for k in keys if k in request.query}
        )

    # -- jobs ----------------------------------------------------------------------------------

    async def list_jobs(self, request: web.Request) -> web.Response:
        return await perform(self.daemon, "listJobs", {})

    async def list_job_runs(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        runs = await self.daemon.operations.job_runs(name, query_limit(request))
        if runs is None:
            return json_error(404, f"no job {name!r}")
        return json_response({"runs": [run.to_json() for run in runs]})

    async def run_job(self, request: web.Request) -> web.Response:
        return await perform(self.daemon, "runJob", {"job": request.match_info["name"]})

    # -- the config ----------------------------------------------------------------------------

    async def reload(self, request: web.Request) -> web.Response:
        """As SIGHUP: validate, swap, keep state; an invalid config keeps the running one."""
        daemon = self.daemon
        if not await daemon.reload_announced():
            problems = "; ".join(daemon.reload_problems)
            return json_error(409, f"config not reloaded, the running one stays: {problems}")
        return json_response({"reloaded": True, "config_hash": daemon.config_hash})


def silence_from(body: SilenceBody, now: float, by: str | None = None) -> Silence | str:
    """The silence a request asks for, or why it is refused (naming the field)."""
    start, end = body.window(now)
    if start > now + MAX_AHEAD:
        return f"starts_at: a silence starts at most {MAX_AHEAD / 86400:g} days ahead"
    if end <= max(start, now):
        return "ends_at: must be in the future and after starts_at"
    if end - start > MAX_SILENCE:
        return f"ends_at: a silence lasts at most {MAX_SILENCE / 86400:g} days"
    return Silence(
        id=new_silence_id(),
        starts_at=start,
        ends_at=end,
        created_by=by or body.created_by,
        comment=body.comment,
        created_at=now,
        rule=body.rule,
        check=body.check,
        labels=body.labels,
    )


def query_limit(request: web.Request) -> int:
    """The `limit` query parameter: 1..MAX_LIMIT, 100 if absent; else a 400 naming it."""
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise web.HTTPBadRequest(reason="limit: not an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise web.HTTPBadRequest(reason=f"limit: must be between 1 and {MAX_LIMIT}")
    return limit
