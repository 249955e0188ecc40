"""The operator API: see and steer what runbookd does.

Incidents (list, one, acknowledge, resolve), approvals (list, approve, reject), silences
(list, create, expire), rules (states, reset a circuit) and checks (run one now). Every answer
is JSON; every bad request gets a 4xx with a reason naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BeforeValidator, Field, field_validator, model_validator

from daemon.api.app import DaemonView, json_error, json_response, read_json
from daemon.core.models import Incident, IncidentStatus, RuleState
from daemon.core.units import StrictModel, parse_duration, parse_time
from daemon.pipeline.approvals import Decision
from daemon.pipeline.silences import Silence, new_silence_id

MAX_LIMIT = 1000
MAX_SILENCE = 90 * 86400.0
# A silence starts at most this far ahead: a maintenance window is planned weeks ahead, not
# years (a start in 2300 would be a silence nobody sees end, and never pruned).
MAX_AHEAD = 90 * 86400.0


class Who(StrictModel):
    """Who acts, and why: both land on the incident's timeline."""

    by: str = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)


# A time in a request body: a number or an ISO text in, epoch seconds out.
Time = Annotated[float, BeforeValidator(parse_time, json_schema_input_type=float | str)]


class SilenceBody(StrictModel):
    created_by: str = Field(min_length=1, max_length=200)
    comment: str = Field(min_length=1, max_length=2000)
    rule: str | None = None
    check: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    # At most MAX_AHEAD from now (the handler checks: the model has no clock).
    starts_at: Time | None = None
    # Either an end time or a duration from the start ("2h"): a silence always ends.
    ends_at: Time | None = None
    duration: str | None = None

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _bounded(self) -> SilenceBody:
        if self.rule is None and self.check is None and not self.labels:
            raise ValueError("a silence needs a matcher: rule, check or labels")
        if (self.ends_at is None) == (self.duration is None):
            raise ValueError("give ends_at or duration (a silence always ends)")
        return self

    def window(self, now: float) -> tuple[float, float]:
        start = self.starts_at if self.starts_at is not None else now
        end = self.ends_at if self.ends_at is not None else start + parse_duration(self.duration)
        return start, end


def operator_routes(daemon: DaemonView) -> list[web.RouteDef]:
    from daemon.api import openapi  # it reads this module's models

    api = Operator(daemon)
    return [
        web.get(openapi.PATH, openapi.serve),
        web.get("/api/v1/incidents", api.list_incidents),
        web.get("/api/v1/incidents/{id}", api.get_incident),
        web.post("/api/v1/incidents/{id}/acknowledge", api.acknowledge),
        web.post("/api/v1/incidents/{id}/resolve", api.resolve),
        web.post("/api/v1/incidents/{id}/approve", api.approve),
        web.post("/api/v1/incidents/{id}/reject", api.reject),
        web.get("/api/v1/approvals", api.list_approvals),
        web.get("/api/v1/silences", api.list_silences),
        web.post("/api/v1/silences", api.create_silence),
        web.delete("/api/v1/silences/{id}", api.expire_silence),
        web.get("/api/v1/rules", api.list_rules),
        web.post("/api/v1/rules/{rule}/reset", api.reset_circuit),
        web.post("/api/v1/checks/{check}/run", api.run_check),
        web.post("/api/v1/-/reload", api.reload),
    ]


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
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            return json_error(400, "limit: not an integer")
        if not 1 <= limit <= MAX_LIMIT:
            return json_error(400, f"limit: must be between 1 and {MAX_LIMIT}")
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

    def _open(self, incident_id: str) -> Incident | None:
        return next((i for i in self.daemon.engine.incidents.values() if i.id == incident_id), None)

    async def acknowledge(self, request: web.Request) -> web.Response:
        """Someone is on it: no more escalation for this incident."""
        incident_id = request.match_info["id"]
        who = await read_json(request, Who)
        incident = self._open(incident_id)
        if incident is None:
            return json_error(404, f"no open incident {incident_id!r}")
        if any(e.kind == "acknowledged" for e in incident.timeline):
            return json_error(409, f"incident {incident_id!r} is already acknowledged")
        message = f"acknowledged by {who.by}" + (f": {who.reason}" if who.reason else "")
        await self.daemon.pipeline.recorder.record(
            incident, "acknowledged", message, by=who.by, reason=who.reason
        )
        return json_response({"incident": incident_id, "acknowledged_by": who.by})

    async def resolve(self, request: web.Request) -> web.Response:
        incident_id = request.match_info["id"]
        who = await read_json(request, Who)
        if not await self.daemon.engine.resolve_by_operator(incident_id, who.by, who.reason):
            return json_error(404, f"no open incident {incident_id!r}")
        return json_response({"incident": incident_id, "resolved_by": who.by})

    # -- approvals ---------------------------------------------------------------------------

    async def approve(self, request: web.Request) -> web.Response:
        return await self._decide(request, approved=True)

    async def reject(self, request: web.Request) -> web.Response:
        return await self._decide(request, approved=False)

    async def _decide(self, request: web.Request, *, approved: bool) -> web.Response:
        incident_id = request.match_info["id"]
        who = await read_json(request, Who)
        decision = Decision(approved, who.by, who.reason)
        if not self.daemon.pipeline.approvals.decide(incident_id, decision):
            return json_error(404, f"incident {incident_id!r} has no step waiting for approval")
        return json_response({"incident": incident_id, "approved": approved, "by": who.by})

    async def list_approvals(self, request: web.Request) -> web.Response:
        pending = [
            {
                "incident": p.incident_id,
                "remediation": p.remediation,
                "asked_at": p.asked_at,
                "deadline": p.deadline,
            }
            for p in self.daemon.pipeline.approvals.pending.values()
        ]
        return json_response({"approvals": pending})

    # -- silences ----------------------------------------------------------------------------

    async def list_silences(self, request: web.Request) -> web.Response:
        # A typo ("?expired=ture") is an error, not a silent "false".
        expired = {"true": True, "1": True, "false": False, "0": False}.get(
            request.query.get("expired", "false").lower()
        )
        if expired is None:
            return json_error(400, "expired: must be true or false")
        now = self.daemon.clock.now()
        silences = self.daemon.pipeline.silences.list(now, include_expired=expired)
        return json_response({"silences": [s.to_json(now) for s in silences]})

    async def create_silence(self, request: web.Request) -> web.Response:
        body = await read_json(request, SilenceBody)
        now = self.daemon.clock.now()
        start, end = body.window(now)
        if start > now + MAX_AHEAD:
            ahead = MAX_AHEAD / 86400
            return json_error(400, f"starts_at: a silence starts at most {ahead:g} days ahead")
        if end <= max(start, now):
            return json_error(400, "ends_at: must be in the future and after starts_at")
        if end - start > MAX_SILENCE:
            return json_error(400, f"ends_at: a silence lasts at most {MAX_SILENCE / 86400:g} days")
        silence = Silence(
            id=new_silence_id(),
            starts_at=start,
            ends_at=end,
            created_by=body.created_by,
            comment=body.comment,
            created_at=now,
            rule=body.rule,
            check=body.check,
            labels=body.labels,
        )
        await self.daemon.pipeline.silences.add(silence)
        return json_response(silence.to_json(now), status=201)

    async def expire_silence(self, request: web.Request) -> web.Response:
        silence_id = request.match_info["id"]
        now = self.daemon.clock.now()
        silence = await self.daemon.pipeline.silences.expire(silence_id, now)
        if silence is None:
            return json_error(404, f"no silence {silence_id!r}")
        return json_response(silence.to_json(now))

    # -- rules and checks --------------------------------------------------------------------

    async def list_rules(self, request: web.Request) -> web.Response:
        engine = self.daemon.engine
        rules: list[dict[str, Any]] = []
        for name, evaluator in sorted(engine.evaluators.items()):
            rules.append(
                {
                    "name": name,
                    "kind": "check",
                    "when": str(evaluator.config.condition),
                    "state": evaluator.state.name.lower(),
                    "blind": evaluator.blind,
                    "blind_reason": evaluator.blind_reason,
                    "last_value": evaluator.last_value,
                }
            )
        for name, rule in sorted(engine.alert_rules.items()):
            state = RuleState.FIRING if rule.firing else RuleState.INACTIVE
            match = rule.config.alert_match
            rules.append(
                {
                    "name": name,
                    "kind": "alert",
                    "when": match.model_dump() if match is not None else None,
                    "state": state.name.lower(),
                    "firing_alerts": len(rule.firing),
                }
            )
        for entry in rules:
            incident = engine.incidents.get(entry["name"])
            entry["incident"] = incident.id if incident else None
            entry["circuit_open"] = await self.daemon.pipeline.breaker.is_open(entry["name"])
        return json_response({"rules": rules})

    async def reset_circuit(self, request: web.Request) -> web.Response:
        rule = request.match_info["rule"]
        engine = self.daemon.engine
        if rule not in engine.evaluators and rule not in engine.alert_rules:
            return json_error(404, f"no rule {rule!r}")
        was_open = await self.daemon.pipeline.reset_circuit(rule)
        return json_response({"rule": rule, "was_open": was_open})

    async def run_check(self, request: web.Request) -> web.Response:
        check = request.match_info["check"]
        scheduler = self.daemon.scheduler
        if check not in scheduler.jobs:
            return json_error(404, f"no check {check!r}")
        if not scheduler.run_now(check):
            return json_error(409, f"check {check!r} is running already")
        return json_response({"check": check, "started": True}, status=202)

    # -- the config ----------------------------------------------------------------------------

    async def reload(self, request: web.Request) -> web.Response:
        """As SIGHUP: validate, swap, keep state; an invalid config keeps the running one."""
        daemon = self.daemon
        if not await daemon.reload_announced():
            problems = "; ".join(daemon.reload_problems)
            return json_error(409, f"config not reloaded, the running one stays: {problems}")
        return json_response({"reloaded": True, "config_hash": daemon.config_hash})
