"""The OpenAPI 3.1 document of the HTTP interface, served at GET /api/v1/openapi.json.

The document is generated from the route table (routes.py) that the router is built from,
and from the pydantic models the handlers validate request bodies with, so a field added to
a model shows up here by itself. tests/integration/test_openapi.py fuzzes a running daemon
against it.

Over 400 lines because the answers' schemas are data, kept in one place with the
generator that reads them.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Final

from aiohttp import web

from daemon import __version__
from daemon.api.acts import LASTING
from daemon.api.check_query import STATUSES
from daemon.api.routes import OPERATIONS, Auth, Operation, Schema
from daemon.core.models import IncidentStatus, RuleState
from daemon.deploys.models import KINDS, SOURCES, DeployStatus
from daemon.procedures.models import RunStatus, StepStatus

REF = "#/components/schemas/{model}"


def ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


# -- the answers -------------------------------------------------------------------------------

STRING: Final[Schema] = {"type": "string"}
NUMBER: Final[Schema] = {"type": "number"}
BOOLEAN: Final[Schema] = {"type": "boolean"}
COUNT: Final[Schema] = {"type": "integer", "minimum": 0}
NULLABLE_STRING: Final[Schema] = {"type": ["string", "null"]}


def strict(properties: Schema, optional: Schema | None = None) -> Schema:
    """An object with exactly these properties, all present (and the optional ones, when
    asked for): a new field fails the tests until it is documented."""
    return {
        "type": "object",
        "properties": properties | (optional or {}),
        "required": list(properties),
        "additionalProperties": False,
    }


def listing(key: str, item: str) -> Schema:
    return strict({key: {"type": "array", "items": ref(item)}})


INCIDENT: Final[Schema] = {
    "id": STRING,
    "rule": STRING,
    "check": STRING,
    "severity": STRING,
    "summary": STRING,
    "status": {"enum": [s.value for s in IncidentStatus]},
    "opened_at": NUMBER,
    "resolved_at": {"type": ["number", "null"]},
    # The observation values and thresholds (or the alert) that opened it.
    "trigger": {"type": "object"},
    "acknowledged_by": {"type": ["string", "null"]},
    "acknowledged_at": {"type": ["number", "null"]},
    "resolved_by": {"type": ["string", "null"]},
}
TIMELINE_ENTRY: Final[Schema] = strict(
    {"ts": NUMBER, "kind": STRING, "message": STRING, "data": {"type": "object"}}
)
RULE: Final[Schema] = {
    "name": STRING,
    # A rule that resolves is inactive again at once: "resolved" is a transition, not a state.
    "state": {"enum": [s.name.lower() for s in RuleState if s is not RuleState.RESOLVED]},
    "incident": NULLABLE_STRING,
    "circuit_open": BOOLEAN,
}
CHECK_RULE: Final[Schema] = strict(
    RULE
    | {
        "kind": {"const": "check"},
        "when": STRING,
        "blind": BOOLEAN,
        "blind_reason": NULLABLE_STRING,
        "last_value": {"type": ["number", "null"]},
    }
)
ALERT_RULE: Final[Schema] = strict(
    RULE
    | {"kind": {"const": "alert"}, "when": {"type": ["object", "null"]}, "firing_alerts": COUNT}
)
NULLABLE_NUMBER: Final[Schema] = {"type": ["number", "null"]}
JOB_RUN: Final[Schema] = strict(
    {
        "id": COUNT,
        "job": STRING,
        # schedule, catch_up or manual.
        "trigger": STRING,
        "scheduled_at": NUMBER,
        "started_at": NULLABLE_NUMBER,
        "ended_at": NULLABLE_NUMBER,
        # succeeded, failed, timeout, interrupted, missed or skipped; null while it runs.
        "outcome": NULLABLE_STRING,
        "detail": STRING,
        # What the action reported (a backup's key, bytes, sha256...).
        "data": {"type": "object"},
    }
)
DEPLOY: Final[Schema] = {
    "id": STRING,
    "version": STRING,
    "environment": STRING,
    "kind": {"enum": list(KINDS)},
    "source": {"enum": list(SOURCES)},
    "started_at": NUMBER,
    "commit": NULLABLE_STRING,
    "by": NULLABLE_STRING,
    # The last known good version when it began.
    "previous": NULLABLE_STRING,
    # CHECK.VALUE -> its baseline before the deploy (null: unknown).
    "baseline": {"type": "object", "additionalProperties": NULLABLE_NUMBER},
    # What its source told (a Vercel deployment's id and url).
    "data": {"type": "object"},
    "status": {"enum": [s.value for s in DeployStatus]},
    "ended_at": NULLABLE_NUMBER,
    # The incident that rolled it back, or paged about it.
    "incident": NULLABLE_STRING,
}
PROCEDURE_RUN: Final[Schema] = {
    "id": STRING,
    "procedure": STRING,
    "params": {"type": "object", "additionalProperties": STRING},
    "by": STRING,
    "started_at": NUMBER,
    "steps": {
        "type": "array",
        "items": strict(
            {
                "name": STRING,
                "status": {"enum": [s.value for s in StepStatus]},
                "started_at": NULLABLE_NUMBER,
                "ended_at": NULLABLE_NUMBER,
                "detail": STRING,
            }
        ),
    },
    "status": {"enum": [s.value for s in RunStatus]},
    "ended_at": NULLABLE_NUMBER,
    # The undo and on_failure remediations begun: undo/STEP/NAME, on_failure/NAME.
    "claims": {"type": "array", "items": STRING},
}
SILENCE: Final[Schema] = strict(
    {
        "id": STRING,
        "starts_at": NUMBER,
        "ends_at": NUMBER,
        "created_by": STRING,
        "comment": STRING,
        "created_at": NUMBER,
        "rule": NULLABLE_STRING,
        "check": NULLABLE_STRING,
        "labels": {"type": "object", "additionalProperties": STRING},
        "active": BOOLEAN,
    }
)

ANSWERS: Final[dict[str, Schema]] = {
    "Error": strict({"error": STRING}),
    "Health": strict({"status": {"const": "ok"}}),
    "Failed": strict({"status": {"const": "failed"}, "reason": STRING}),
    "Readiness": strict(
        {
            "status": {"enum": ["ready", "not ready"]},
            "reason": STRING,
            "role": {"enum": ["single", "leader", "standby"]},
            # The first round: checks that have run at least once, of all configured.
            "checks": COUNT,
            "checks_run": COUNT,
        }
    ),
    "Document": {"type": "object", "required": ["openapi", "paths"]},
    "IncidentSummary": strict(INCIDENT),
    "Incident": strict(INCIDENT | {"timeline": {"type": "array", "items": TIMELINE_ENTRY}}),
    "IncidentList": listing("incidents", "IncidentSummary"),
    "Acknowledged": strict({"incident": STRING, "acknowledged_by": STRING}),
    "ResolvedByOperator": strict({"incident": STRING, "resolved_by": STRING}),
    "Decision": strict({"incident": STRING, "approved": BOOLEAN, "by": STRING}),
    "Approval": strict(
        {"incident": STRING, "remediation": STRING, "asked_at": NUMBER, "deadline": NUMBER}
    ),
    "ApprovalList": listing("approvals", "Approval"),
    "Silence": SILENCE,
    "SilenceList": listing("silences", "Silence"),
    "Rule": {"oneOf": [CHECK_RULE, ALERT_RULE]},
    "RuleList": listing("rules", "Rule"),
    "CircuitReset": strict({"rule": STRING, "was_open": BOOLEAN}),
    "CheckStarted": strict({"check": STRING, "started": {"const": True}}),
    "Check": strict(
        {
            "name": STRING,
            "type": STRING,
            "interval": NUMBER,
            # null until the check has run once (or on a standby: the leader runs checks).
            "status": {"enum": ["ok", "warn", "critical", "unknown", None]},
            "values": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
            "reason": STRING,
            "at": NULLABLE_NUMBER,
            "duration": NULLABLE_NUMBER,
        },
        # With history=true: the value plotted and its last values, oldest first (null: a
        # run that gave none).
        optional={
            "plotted": STRING,
            "recent": {"type": "array", "items": {"type": ["number", "null"]}},
        },
    ),
    "CheckList": strict(
        {
            "checks": {"type": "array", "items": ref("Check")},
            "total": {"type": "integer", "minimum": 0},
            "counts": {
                "type": "object",
                "properties": {st: {"type": "integer", "minimum": 0} for st in STATUSES},
                "required": list(STATUSES),
                "additionalProperties": False,
            },
        }
    ),
    "JobRun": JOB_RUN,
    "JobRunList": listing("runs", "JobRun"),
    "Job": strict(
        {
            "name": STRING,
            "run": STRING,
            "schedule": STRING,
            "timezone": STRING,
            "enabled": BOOLEAN,
            "running": BOOLEAN,
            "next_at": NULLABLE_NUMBER,
            "last_run": {"oneOf": [ref("JobRun"), {"type": "null"}]},
            "last_success_at": NULLABLE_NUMBER,
        }
    ),
    "JobList": listing("jobs", "Job"),
    "JobStarted": strict({"job": STRING, "started": {"const": True}}),
    "DeploySummary": strict(DEPLOY),
    "Deploy": strict(DEPLOY | {"timeline": {"type": "array", "items": TIMELINE_ENTRY}}),
    "DeployList": listing("deploys", "DeploySummary"),
    "DeployAnnounced": strict(
        {
            # watching; recorded (another environment: not watched).
            "action": {"enum": ["watching", "recorded"]},
            "deploy": ref("Deploy"),
        }
    ),
    "VercelEventReceived": strict(
        {
            "received": STRING,
            # watching, recorded (a failed build, another environment), noted (the rollback
            # seen again), duplicate (a delivery received before), ignored (another event).
            "action": {"enum": ["watching", "recorded", "noted", "duplicate", "ignored"]},
            "deploy": NULLABLE_STRING,
            "reason": STRING,
        }
    ),
    "Reloaded": strict({"reloaded": {"const": True}, "config_hash": STRING}),
    "AlertsReceived": strict({"received": COUNT, "matched": COUNT}),
    "AlertsRefused": strict(
        {"error": STRING, "received": COUNT, "matched": COUNT, "refused": COUNT}
    ),
    "Queued": strict({"queued": {"type": "integer"}, "reason": STRING}),
    "Procedure": strict(
        {
            "name": STRING,
            "description": STRING,
            "params": {
                "type": "object",
                "additionalProperties": strict(
                    {"description": STRING, "default": NULLABLE_STRING, "pattern": NULLABLE_STRING}
                ),
            },
            "preconditions": {"type": "array", "items": STRING},
            "steps": {
                "type": "array",
                "items": strict(
                    {
                        "name": STRING,
                        "kind": {"enum": ["run", "job", "wait_for", "approval"]},
                        "target": STRING,
                        "undo": {"type": "array", "items": STRING},
                    }
                ),
            },
            "on_failure": {"type": "array", "items": STRING},
        }
    ),
    "ProcedureList": listing("procedures", "Procedure"),
    "ProcedureRun": strict(
        PROCEDURE_RUN | {"timeline": {"type": "array", "items": TIMELINE_ENTRY}}
    ),
    "ProcedureRunSummary": strict(PROCEDURE_RUN),
    "ProcedureRunList": listing("runs", "ProcedureRunSummary"),
    "RunCancelling": strict({"run": STRING, "cancelling": {"const": True}}),
}

# -- the document ------------------------------------------------------------------------------

ERRORS: Final[dict[int, str]] = {
    400: "Bad request: a malformed request, or a body or query the reason names the field of "
    "(NaN, Infinity and numbers beyond a double are refused)",
    401: "No token, or an unknown one",
    403: "The token's scope does not allow this route",
    404: "Not found",
    408: "The request line and headers (runbookd.api.header_timeout) or the body "
    "(runbookd.api.body_timeout) did not arrive in time",
    409: "Conflict",
    413: "Body larger than runbookd.api.max_body",
    415: "Content-Type is not application/json",
    429: "Rate limit exceeded: see Retry-After",
    503: "This replica is a standby and no leader took the request in time (or the store "
    "cannot be reached): nothing was done; send it again",
    504: "This replica is a standby; the leader took the request but did not answer in time: "
    "it may have taken effect",
}
SECURITY: Final[dict[Auth, list[dict[str, list[str]]]]] = {
    "read": [{"bearer": ["read"]}],
    "write": [{"bearer": ["write"]}],
    "intake": [{"bearer": ["intake"]}],
    "webhook": [{"webhookSignature": []}, {"webhookToken": []}],
    "vercel": [{"vercelSignature": []}],
    # {}: no requirement, unless runbookd.api.protect_metrics is on.
    "metrics": [{}, {"bearer": ["read"]}],
    "open": [],
    "session": [],  # the console's pages: not in the document
}
SECURITY_SCHEMES: Final[Schema] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from runbookd.api.tokens. Its scope decides the routes: read "
        "(GET), intake (POST /api/v1/alerts), write (everything).",
    },
    "webhookToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The webhook's own token (webhooks.NAME.auth.token).",
    },
    "webhookSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Runbookd-Signature",
        "description": "sha256=HEX: HMAC-SHA256 with webhooks.NAME.auth.hmac_secret over "
        "`TIMESTAMP.BODY`, TIMESTAMP being the X-Runbookd-Timestamp header (unix seconds).",
    },
    "vercelSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "x-vercel-signature",
        "description": "HEX: HMAC-SHA1 with deploys.vercel.webhook_secret over the body, as "
        "Vercel signs its webhooks.",
    },
}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error_codes(op: Operation) -> set[int]:
    # Before any route: the rate limit, a malformed request, a request too slow to arrive.
    codes = {400, 408, 429}
    if op.auth in ("read", "write", "intake", "metrics"):
        codes |= {401, 403}
    elif op.auth in ("webhook", "vercel"):
        codes.add(401)
    if op.method == "post":  # runbookd.api.max_body, whether the route reads a body or not
        codes.add(413)
    if op.body is not None:
        codes.add(415)
    if op.path_params and op.auth != "webhook":  # an unknown webhook answers as a known one
        codes.add(404)
    if op.conflict:
        codes.add(409)
    if op.act:  # performed by the leader: a standby hands it over (api/acts.py)
        codes |= {503, 504}
    return codes


def _responses(op: Operation) -> Schema:
    if op.answer:
        out: Schema = {str(op.ok): _json(ref(op.answer), "OK")}
    else:
        text = {"text/plain": {"schema": STRING}}
        out = {str(op.ok): {"description": "The Prometheus text format", "content": text}}
    if op.operation_id == "readyz":
        out["503"] = _json(ref("Readiness"), "Not ready yet: the reason says why")
    if op.operation_id == "healthz":
        out["503"] = _json(ref("Failed"), "A core task died: the daemon is exiting (status 4)")
    for code in sorted(_error_codes(op)):
        why = f"Conflict: {op.conflict}" if code == 409 else ERRORS[code]
        out[str(code)] = _json(ref("Error"), why)
    if op.tag == "intake":
        out["429"] = _json(
            {"oneOf": [ref("Error"), ref("AlertsRefused")]},
            "Rate limit exceeded, or new firing alerts refused at the caps of runbookd.alerts "
            "(the rest of the request was applied; send it again): see Retry-After",
        )
    if op.act in LASTING:
        out["202"] = _json(
            ref("Queued"),
            "This replica is a standby and no leader answered in time: the request is kept "
            "in the store for whichever replica leads next",
        )
    if op.auth == "webhook":
        out["401"] = _json(
            ref("Error"),
            "No credentials, or not this webhook's; a webhook that does not exist answers the same",
        )
    if op.auth == "vercel":
        out["401"] = _json(
            ref("Error"),
            "No signature or a bad one (no deploys.vercel answers the same), or a delivery "
            "whose createdAt is further than deploys.vercel.max_age from runbookd's clock",
        )
    return out


def _parameters(op: Operation) -> list[Schema]:
    path_schema = {"type": "string", "minLength": 1}
    params = [
        {"name": n, "in": "path", "required": True, "schema": path_schema} for n in op.path_params
    ]
    params += [
        {"name": p.name, "in": "query", "schema": p.schema, "description": p.description}
        for p in op.query
    ]
    return params


def _operation(op: Operation) -> Schema:
    out: Schema = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        # A role list on an http scheme is allowed by OpenAPI 3.1: the token's scope.
        "security": SECURITY[op.auth],
        "responses": _responses(op),
    }
    if params := _parameters(op):
        out["parameters"] = params
    if op.body is not None:
        schema = {"type": "object"} if op.body == "object" else ref(op.body.__name__)
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    return out


# What a model's validators check and pydantic cannot export, added to its schema by hand.
# Schemathesis sends requests on both sides of each: a refinement the handler does not
# enforce, or a check missing here, fails tests/integration/test_openapi.py.
# An alert's times: unset (empty, null, Alertmanager's zero time) or ISO 8601 with a zone in
# 2000..2100 (daemon.units.parse_time). Labels and annotations have no bound: what is beyond
# one is cut, not refused (daemon.alerts.clip).
_ALERT_TIME: Final[Schema] = {
    "anyOf": [
        {
            "type": "string",
            "pattern": (
                r"^(|0001-01-01T00:00:00Z|20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
                r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]0[0-9]:00))$"
            ),
        },
        {"type": "null"},
    ]
}
REFINEMENTS: Final[dict[tuple[str, str], Schema]] = {
    ("WebhookAlert", "startsAt"): _ALERT_TIME,
    ("WebhookAlert", "endsAt"): _ALERT_TIME,
}


def _model_schemas() -> dict[str, Schema]:
    """The request models' JSON schemas, with their nested models hoisted to components."""
    found: dict[str, Schema] = {}
    for op in OPERATIONS:
        if isinstance(op.body, type):
            schema = op.body.model_json_schema(ref_template=REF)
            found |= schema.pop("$defs", {})
            found[op.body.__name__] = schema
    for (model, prop), extra in REFINEMENTS.items():
        found[model]["properties"][prop] |= extra
    return found


def document() -> Schema:
    """The whole document, a fresh copy: it shares no dict with this module's constants."""
    paths: dict[str, Schema] = {}
    for op in OPERATIONS:
        if op.tag == "ui":  # HTML pages and forms, not an API
            continue
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "runbookd",
            "version": __version__,
            "description": "Incidents, approvals, silences, rule states, jobs, deploys and "
            'alert intake of a runbookd daemon. Every error answer is {"error": "<reason>"}.',
        },
        "paths": paths,
        "components": {"schemas": ANSWERS | _model_schemas(), "securitySchemes": SECURITY_SCHEMES},
    }
    return copy.deepcopy(doc)


@functools.cache
def _serialized() -> bytes:
    return json.dumps(document(), allow_nan=False).encode()


async def serve(request: web.Request) -> web.Response:
    return web.Response(body=_serialized(), content_type="application/json")
