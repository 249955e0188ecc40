"""The HTTP interface's route table: every route is one `Operation`, which says its handler
(by operation id), who may call it, what it takes and what it answers.

The router (`bind`), the guard's scopes (`auth_of`) and the OpenAPI document (openapi.py)
are all built from this one table, so a route cannot be served, protected and documented in
three different ways. Over 400 lines because the table is data: one row per route.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiohttp import web
from pydantic import BaseModel

from daemon.api.check_query import MAX_MATCH, ORDERS, STATUSES
from daemon.api.schemas import MAX_LIMIT, DeployBody, RunBody, SilenceBody, Who
from daemon.core.models import IncidentStatus
from daemon.deploys.models import DeployStatus
from daemon.engine.alerts import AlertmanagerWebhook
from daemon.procedures.models import RunStatus

Schema = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Who may call a route: a token scope; "webhook": the webhook's own token or signature;
# "vercel": Vercel's signature with deploys.vercel's secret; "metrics": open unless
# runbookd.api.protect_metrics asks for a read token; "open"; "session": a console page, which
# checks its session cookie itself (daemon/ui), the guard asking for no bearer token.
Auth = Literal["read", "write", "intake", "webhook", "vercel", "metrics", "open", "session"]

PATH = "/api/v1/openapi.json"


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    schema: Schema
    description: str


@dataclass(frozen=True, slots=True)
class Operation:
    """One route: who may call it, what it takes, what it answers."""

    method: Literal["get", "post", "delete"]
    path: str
    operation_id: str
    summary: str
    auth: Auth
    ok: int
    answer: str  # a name in components.schemas; "" for the Prometheus text
    # The model the handler validates the body with; "object": any JSON object.
    body: type[BaseModel] | Literal["object"] | None = None
    query: tuple[Param, ...] = ()
    conflict: str = ""  # why the route may answer 409
    tag: str = "operator"
    # What the leader does for it (api/acts.py), which a standby hands over through the store;
    # "" for a route every replica answers itself.
    act: str = ""

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def template(self) -> str:
        """The path as aiohttp names its route: "/ui/{path:.+}" is "/ui/{path}"."""
        return re.sub(r"\{(\w+):[^}]+\}", r"{\1}", self.path)


def ui(
    method: Literal["get", "post"], path: str, operation_id: str, summary: str, auth: Auth
) -> Operation:
    return Operation(method, "/ui" + path, operation_id, summary, auth, 200, "", tag="ui")


# The console (daemon/ui): HTML pages and forms, not in the OpenAPI document. Pages ask for a
# session (any scope), forms a session of scope write and its CSRF token (daemon/ui/pages.py).
UI_OPERATIONS: Final[tuple[Operation, ...]] = (
    ui("get", "", "uiRoot", "To the overview", "open"),
    ui("get", "/", "uiOverview", "Open incidents, rules, checks, jobs, deploys", "session"),
    ui("get", "/live.json", "uiOverviewLive", "The overview's live part", "session"),
    ui("get", "/login", "uiLoginForm", "Log in with an API token", "open"),
    ui("post", "/login", "uiLogin", "A token for a session cookie", "open"),
    ui("post", "/logout", "uiLogout", "End the session", "session"),
    ui("get", "/incidents/{id}", "uiIncident", "An incident and its timeline", "session"),
    ui("get", "/incidents/{id}/live.json", "uiIncidentLive", "Its live part", "session"),
    ui("get", "/incidents/{id}/report.md", "uiReport", "Its report, in Markdown", "session"),
    ui("post", "/incidents/{id}/{action}", "uiIncidentAct", "Act on an incident", "session"),
    ui("get", "/checks", "uiChecks", "Every check, a page at a time", "session"),
    ui("get", "/approvals", "uiApprovals", "Steps waiting for a person", "session"),
    ui("get", "/silences", "uiSilences", "Silences and maintenance windows", "session"),
    ui("post", "/silences", "uiSilenceCreate", "Create a silence", "session"),
    ui("post", "/silences/{id}/expire", "uiSilenceExpire", "End a silence now", "session"),
    ui("get", "/procedures", "uiProcedures", "Procedures, and their recent runs", "session"),
    ui("post", "/procedures/{name}/runs", "uiProcedureStart", "Start a run", "session"),
    ui("get", "/procedure-runs/{id}", "uiProcedureRun", "A run: its steps and timeline", "session"),
    ui("post", "/procedure-runs/{id}/{action}", "uiProcedureRunAct", "Act on a run", "session"),
    ui("get", "/jobs", "uiJobs", "Scheduled jobs, their last runs, run one now", "session"),
    ui("get", "/jobs/{name}", "uiJob", "A job and its recent runs with their reports", "session"),
    ui("post", "/jobs/{name}/run", "uiJobRun", "Run a job now", "session"),
    ui("get", "/deploys", "uiDeploys", "Recent deploys and their verdicts", "session"),
    ui("get", "/deploys/{id}", "uiDeploy", "A deploy: baseline, timeline, verdict", "session"),
    ui("get", "/static/{name}", "uiStatic", "The console's script and style", "open"),
    # Last: any other address under /ui/ is a page that says so, not the API's JSON 401.
    ui("get", "/{path:.+}", "uiNotFound", "No such page", "session"),
    # The public status page (status_page:, opt-in): no token, nothing internal.
    Operation("get", "/status", "statusPage", "The status page", "open", 200, "", tag="ui"),
    Operation("get", "/status.json", "statusFeed", "Its JSON feed", "open", 200, "", tag="ui"),
)

STATUS = Param("status", {"enum": [s.value for s in IncidentStatus]}, "only incidents in it")
RULE_NAME = Param("rule", {"type": "string"}, "only incidents of this rule")
LIMIT = Param(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
    "at most this many, newest first",
)
EXPIRED = Param("expired", {"type": "boolean", "default": False}, "also silences that ended")
RUN_STATUS = Param("status", {"enum": [s.value for s in RunStatus]}, "only runs in it")
PROCEDURE = Param("procedure", {"type": "string"}, "only runs of this procedure")
DEPLOY_STATUS = Param("status", {"enum": [s.value for s in DeployStatus]}, "only deploys in it")

CHECK_QUERY = (
    Param("status", {"enum": list(STATUSES)}, "only checks in it (none: not run yet)"),
    Param("match", {"type": "string", "maxLength": MAX_MATCH}, "only names containing it"),
    Param("order", {"enum": list(ORDERS), "default": "name"}, "trouble: critical first, ok last"),
    Param("offset", {"type": "integer", "minimum": 0, "default": 0}, "skip this many"),
    Param("limit", {"type": "integer", "minimum": 1}, "at most this many (default: all)"),
    Param("history", {"type": "boolean", "default": False}, "with each one's recent values"),
)

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation("get", "/healthz", "healthz", "Liveness", "open", 200, "Health", tag="health"),
    Operation("get", "/readyz", "readyz", "Readiness", "open", 200, "Readiness", tag="health"),
    Operation("get", "/metrics", "metrics", "Prometheus metrics", "metrics", 200, "", tag="health"),
    Operation("get", PATH, "openapi", "This document", "read", 200, "Document", tag="meta"),
    Operation(
        "get",
        "/api/v1/incidents",
        "listIncidents",
        "Incidents, newest first, without their timelines",
        "read",
        200,
        "IncidentList",
        query=(STATUS, RULE_NAME, LIMIT),
    ),
    Operation(
        "get", "/api/v1/incidents/{id}", "getIncident", "One incident", "read", 200, "Incident"
    ),
    Operation(
        "post",
        "/api/v1/incidents/{id}/acknowledge",
        "acknowledgeIncident",
        "Someone is on it: no more escalation for this open incident",
        "write",
        200,
        "Acknowledged",
        body=Who,
        conflict="already acknowledged",
        act="acknowledge",
    ),
    Operation(
        "post",
        "/api/v1/incidents/{id}/resolve",
        "resolveIncident",
        "Close an open incident; its rule starts afresh and may fire again",
        "write",
        200,
        "ResolvedByOperator",
        body=Who,
        act="resolve",
    ),
    Operation(
        "post",
        "/api/v1/incidents/{id}/approve",
        "approveStep",
        "Approve the incident's step that waits for approval",
        "write",
        200,
        "Decision",
        body=Who,
        act="decide",
    ),
    Operation(
        "post",
        "/api/v1/incidents/{id}/reject",
        "rejectStep",
        "Reject the incident's step that waits for approval: its plan ends",
        "write",
        200,
        "Decision",
        body=Who,
        act="decide",
    ),
    Operation(
        "get",
        "/api/v1/approvals",
        "listApprovals",
        "Steps waiting",
        "read",
        200,
        "ApprovalList",
        act="listApprovals",
    ),
    Operation(
        "get",
        "/api/v1/silences",
        "listSilences",
        "Silences that have not ended (and, asked, those that did in the last 30 days)",
        "read",
        200,
        "SilenceList",
        query=(EXPIRED,),
        act="listSilences",
    ),
    Operation(
        "post",
        "/api/v1/silences",
        "createSilence",
        "Silence matching incidents from now, or later (a maintenance window); at most 90 days",
        "write",
        201,
        "Silence",
        body=SilenceBody,
        act="createSilence",
    ),
    Operation(
        "delete",
        "/api/v1/silences/{id}",
        "expireSilence",
        "End a silence now",
        "write",
        200,
        "Silence",
        act="expireSilence",
    ),
    Operation(
        "get",
        "/api/v1/rules",
        "listRules",
        "Every rule's state",
        "read",
        200,
        "RuleList",
        act="listRules",
    ),
    Operation(
        "post",
        "/api/v1/rules/{rule}/reset",
        "resetCircuit",
        "Resume a rule's automation after its circuit breaker opened",
        "write",
        200,
        "CircuitReset",
        act="resetCircuit",
    ),
    Operation(
        "post",
        "/api/v1/checks/{check}/run",
        "runCheck",
        "Run a check now",
        "write",
        202,
        "CheckStarted",
        conflict="the check is running already",
        act="runCheck",
    ),
    Operation(
        "get",
        "/api/v1/checks",
        "listChecks",
        "Every check with its last observation (status, values, reason)",
        "read",
        200,
        "CheckList",
        query=CHECK_QUERY,
        act="listChecks",
    ),
    Operation(
        "get",
        "/api/v1/jobs",
        "listJobs",
        "Every scheduled job",
        "read",
        200,
        "JobList",
        act="listJobs",
    ),
    Operation(
        "get",
        "/api/v1/jobs/{name}/runs",
        "listJobRuns",
        "A job's runs, newest first",
        "read",
        200,
        "JobRunList",
        query=(LIMIT,),
    ),
    Operation(
        "post",
        "/api/v1/jobs/{name}/run",
        "runJob",
        "Run a job now, whatever its schedule",
        "write",
        202,
        "JobStarted",
        conflict="a run of the job is going on",
        act="runJob",
    ),
    Operation(
        "get",
        "/api/v1/procedures",
        "listProcedures",
        "The procedures configured, with their parameters and steps",
        "read",
        200,
        "ProcedureList",
        tag="procedures",
    ),
    Operation(
        "post",
        "/api/v1/procedures/{name}/runs",
        "startProcedure",
        "Start a run of a procedure: recorded, then its steps run in order on the leader",
        "write",
        201,
        "ProcedureRun",
        body=RunBody,
        conflict="a precondition is not met (the reason names the check)",
        tag="procedures",
        act="startProcedure",
    ),
    Operation(
        "get",
        "/api/v1/procedure-runs",
        "listProcedureRuns",
        "Procedure runs, newest first, without their timelines",
        "read",
        200,
        "ProcedureRunList",
        query=(PROCEDURE, RUN_STATUS, LIMIT),
        tag="procedures",
    ),
    Operation(
        "get",
        "/api/v1/procedure-runs/{id}",
        "getProcedureRun",
        "One procedure run with its steps and timeline",
        "read",
        200,
        "ProcedureRun",
        tag="procedures",
    ),
    Operation(
        "post",
        "/api/v1/procedure-runs/{id}/approve",
        "approveRunStep",
        "Approve the run's step waiting for an operator",
        "write",
        200,
        "Decision",
        body=Who,
        tag="procedures",
        act="decide",
    ),
    Operation(
        "post",
        "/api/v1/procedure-runs/{id}/reject",
        "rejectRunStep",
        "Reject the run's step waiting for an operator: the run fails and undoes what it did",
        "write",
        200,
        "Decision",
        body=Who,
        tag="procedures",
        act="decide",
    ),
    Operation(
        "post",
        "/api/v1/procedure-runs/{id}/cancel",
        "cancelProcedureRun",
        "Cancel a run: the step going on is cut short and what the run did is undone",
        "write",
        202,
        "RunCancelling",
        body=Who,
        tag="procedures",
        act="cancelProcedure",
    ),
    Operation(
        "post",
        "/api/v1/deploys",
        "announceDeploy",
        "Announce a deploy (CI): recorded, announced and watched against the values before it",
        "write",
        201,
        "DeployAnnounced",
        body=DeployBody,
        conflict="the config has no deploys: section",
        tag="deploys",
        act="announceDeploy",
    ),
    Operation(
        "get",
        "/api/v1/deploys",
        "listDeploys",
        "Deploys, newest first, without their timelines",
        "read",
        200,
        "DeployList",
        query=(DEPLOY_STATUS, LIMIT),
        tag="deploys",
    ),
    Operation(
        "get",
        "/api/v1/deploys/{id}",
        "getDeploy",
        "One deploy with its timeline",
        "read",
        200,
        "Deploy",
        tag="deploys",
    ),
    Operation(
        "post",
        "/api/v1/vercel/events",
        "vercelEvents",
        "Vercel's deployment webhooks, signed in x-vercel-signature (deploys.vercel)",
        "vercel",
        200,
        "VercelEventReceived",
        body="object",
        tag="deploys",
        act="vercelEvent",
    ),
    Operation(
        "post",
        "/api/v1/-/reload",
        "reload",
        "Reload the config file, as SIGHUP does",
        "write",
        200,
        "Reloaded",
        conflict="the config file does not validate: the running config stays",
    ),
    Operation(
        "post",
        "/api/v1/alerts",
        "alertmanagerWebhook",
        "Alerts from Alertmanager (webhook version 4) or Grafana (version 1)",
        "intake",
        200,
        "AlertsReceived",
        body=AlertmanagerWebhook,
        tag="intake",
        act="intake",
    ),
    Operation(
        "post",
        "/api/v1/webhooks/{name}",
        "genericWebhook",
        "One alert from any system, mapped by the paths configured under webhooks.NAME",
        "webhook",
        200,
        "AlertsReceived",
        body="object",
        tag="intake",
        conflict="this signed request was accepted already (a replay)",
        act="intake",
    ),
    *UI_OPERATIONS,
)


_BY_ROUTE: Final[dict[tuple[str, str], Operation]] = {
    (op.method, op.template): op for op in OPERATIONS
}


def auth_of(method: str, path: str) -> Auth | None:
    """Who may call the route (`path` is its template); None: the table has no such route.
    HEAD is answered by the GET handler, so it asks what GET asks."""
    method = "get" if method == "HEAD" else method.lower()
    op = _BY_ROUTE.get((method, path))
    return op.auth if op is not None else None


def bind(handlers: Mapping[str, Handler]) -> list[web.RouteDef]:
    """The router's routes: each operation with its handler, found by operation id. A handler
    without an operation, or an operation without a handler, is a programming error."""
    ids = {op.operation_id for op in OPERATIONS}
    if missing := ids - handlers.keys():
        raise ValueError(f"operations without a handler: {sorted(missing)}")
    if extra := handlers.keys() - ids:
        raise ValueError(f"handlers without an operation: {sorted(extra)}")
    return [_route(op, handlers[op.operation_id]) for op in OPERATIONS]


def _route(op: Operation, handler: Handler) -> web.RouteDef:
    if op.method == "get":
        return web.get(op.path, handler)  # and HEAD, answered by the same handler
    return web.route(op.method.upper(), op.path, handler)
