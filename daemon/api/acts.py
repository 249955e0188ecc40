"""What the leader does for a request, apart from reading it: acts a standby can hand over.

An act is a route's work once its request has been authenticated and its body validated: its
arguments are JSON, its result an `Answer` (a status and a JSON body). The replica that got
the request performs the act if it acts itself (one daemon alone, or the leader of several);
a standby leaves it in the store for the leader and relays the leader's answer
(runtime/forwarding.py), so an operator, Alertmanager or CI may send to any replica. Reads of
what only the leader holds in memory (approvals waiting, rules' states, silences, jobs) are
acts too; reads of the store are answered by every replica.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from daemon.api.bodies import json_response
from daemon.api.check_query import CheckQuery
from daemon.api.port import Answer, DaemonView, RunStart
from daemon.deploys.models import DeployEvent
from daemon.deploys.state import NotConfigured
from daemon.deploys.vercel import VercelDelivery
from daemon.engine.alerts import Alert, AlertCapReached
from daemon.pipeline.approvals import Decision
from daemon.pipeline.silences import Silence
from daemon.procedures.runner import PreconditionsNotMet, Refused, UnknownProcedure

Act = Callable[[DaemonView, dict[str, Any]], Awaitable[Answer]]

ACTS: dict[str, Act] = {}
# Acts whose request stays in the store for the next leader when none answers in time (alerts
# are facts: a later leader still wants them). Every other act is withdrawn and refused, so
# that an operator's command never takes effect long after its answer said it did not.
LASTING = frozenset({"intake"})
NOT_CONFIGURED = "no deploys: section in the config: deploys are not watched"


def act(name: str) -> Callable[[Act], Act]:
    def register(perform: Act) -> Act:
        ACTS[name] = perform
        return perform

    return register


async def perform(daemon: DaemonView, name: str, args: dict[str, Any]) -> web.Response:
    """The act's answer, from this replica if it acts, else from the leader."""
    return respond(await answer(daemon, name, args))


async def answer(daemon: DaemonView, name: str, args: dict[str, Any]) -> Answer:
    """The act's `Answer` (the console renders it as a page)."""
    if daemon.role() == "standby":
        return await daemon.forward(name, args)
    return await carry_out(daemon, name, args)


async def carry_out(daemon: DaemonView, name: str, args: dict[str, Any]) -> Answer:
    """The act done here: a request that came to this replica, or one a standby handed over
    (which may name an act this replica's version does not know)."""
    perform = ACTS.get(name)
    if perform is None:
        return Answer.error(400, f"this replica does not know the act {name!r}")
    return await perform(daemon, args)


def respond(answer: Answer) -> web.Response:
    return json_response(answer.body, status=answer.status, headers=answer.headers or None)


# -- incidents and approvals --------------------------------------------------------------------


@act("acknowledge")
async def acknowledge(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    incident_id, by = args["incident"], args["by"]
    incident = daemon.operations.open_incident(incident_id)
    if incident is None:
        return Answer.error(404, f"no open incident {incident_id!r}")
    if not await daemon.operations.acknowledge(incident, by, args["reason"]):
        return Answer.error(409, f"incident {incident_id!r} is already acknowledged")
    return Answer(200, {"incident": incident_id, "acknowledged_by": by})


@act("resolve")
async def resolve(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    incident_id, by = args["incident"], args["by"]
    if not await daemon.operations.resolve(incident_id, by, args["reason"]):
        return Answer.error(404, f"no open incident {incident_id!r}")
    return Answer(200, {"incident": incident_id, "resolved_by": by})


@act("decide")
async def decide(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    incident_id, approved, by = args["incident"], args["approved"], args["by"]
    if not daemon.operations.decide(incident_id, Decision(approved, by, args["reason"])):
        subject = args.get("subject", "incident")  # or "procedure run"
        return Answer.error(404, f"{subject} {incident_id!r} has no step waiting for approval")
    return Answer(200, {"incident": incident_id, "approved": approved, "by": by})


@act("listApprovals")
async def list_approvals(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    pending = [
        {
            "incident": p.incident_id,
            "remediation": p.remediation,
            "asked_at": p.asked_at,
            "deadline": p.deadline,
        }
        for p in daemon.operations.pending_approvals()
    ]
    return Answer(200, {"approvals": pending})


# -- silences -------------------------------------------------------------------------------------


@act("listSilences")
async def list_silences(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    now = daemon.clock.now()
    silences = daemon.operations.silences(now, include_expired=args["expired"])
    return Answer(200, {"silences": [s.to_json(now) for s in silences]})


@act("createSilence")
async def create_silence(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    silence = Silence(**args["silence"])
    if (unknown := daemon.operations.unknown_target(silence)) is not None:
        return Answer.error(400, unknown)
    await daemon.operations.add_silence(silence)
    return Answer(201, silence.to_json(daemon.clock.now()))


@act("expireSilence")
async def expire_silence(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    silence_id, now = args["silence"], daemon.clock.now()
    silence = await daemon.operations.expire_silence(silence_id, now)
    if silence is None:
        return Answer.error(404, f"no silence {silence_id!r}")
    return Answer(200, silence.to_json(now))


# -- rules, checks and jobs ------------------------------------------------------------------------


@act("listRules")
async def list_rules(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    return Answer(200, {"rules": await daemon.operations.rules()})


@act("resetCircuit")
async def reset_circuit(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    rule = args["rule"]
    if not daemon.operations.has_rule(rule):
        return Answer.error(404, f"no rule {rule!r}")
    was_open = await daemon.operations.reset_circuit(rule)
    return Answer(200, {"rule": rule, "was_open": was_open})


@act("runCheck")
async def run_check(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    check = args["check"]
    run = daemon.operations.run_check(check)
    if run is RunStart.UNKNOWN:
        return Answer.error(404, f"no check {check!r}")
    if run is RunStart.RUNNING:
        return Answer.error(409, f"check {check!r} is running already")
    return Answer(202, {"check": check, "started": True})


@act("listChecks")
async def list_checks(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    try:
        query = CheckQuery.from_args(args)
    except ValueError as exc:
        return Answer.error(400, str(exc))
    return Answer(200, daemon.operations.checks(query))


@act("listJobs")
async def list_jobs(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    return Answer(200, {"jobs": await daemon.operations.jobs()})


@act("runJob")
async def run_job(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    name = args["job"]
    run = daemon.operations.run_job(name)
    if run is RunStart.UNKNOWN:
        return Answer.error(404, f"no job {name!r}")
    if run is RunStart.RUNNING:
        return Answer.error(409, f"a run of job {name!r} is going on")
    return Answer(202, {"job": name, "started": True})


# -- procedures ------------------------------------------------------------------------------------


@act("startProcedure")
async def start_procedure(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    name = args["procedure"]
    try:
        run = await daemon.operations.start_procedure(name, args["params"], args["by"])
    except UnknownProcedure:
        return Answer.error(404, f"no procedure {name!r}")
    except PreconditionsNotMet as exc:
        return Answer.error(409, str(exc))
    except Refused as exc:
        return Answer.error(400, str(exc))
    return Answer(201, run.to_json())


@act("cancelProcedure")
async def cancel_procedure(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    run_id = args["run"]
    if not daemon.operations.cancel_procedure(run_id, args["by"], args["reason"]):
        return Answer.error(404, f"no run {run_id!r} going on")
    return Answer(202, {"run": run_id, "cancelling": True})


# -- deploys -----------------------------------------------------------------------------------


@act("announceDeploy")
async def announce_deploy(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    try:
        deploy, action = await daemon.operations.deploy(DeployEvent(**args["event"]))
    except NotConfigured:
        return Answer.error(409, NOT_CONFIGURED)
    return Answer(201, {"action": action, "deploy": deploy.to_json()})


@act("vercelEvent")
async def vercel_event(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    delivery = VercelDelivery.model_validate(args["delivery"])
    try:
        return Answer(200, await daemon.operations.vercel_event(delivery))
    except NotConfigured:  # a reload took deploys.vercel away meanwhile
        return Answer.error(401, "bad signature", {"WWW-Authenticate": VERCEL_CHALLENGE})
    except ValueError as exc:
        return Answer.error(400, str(exc))


VERCEL_CHALLENGE = 'Signature realm="runbookd-vercel"'


# -- alerts --------------------------------------------------------------------------------------


@act("intake")
async def intake(daemon: DaemonView, args: dict[str, Any]) -> Answer:
    return await take(daemon, [Alert(**a) for a in args["alerts"]])


def alerts_args(alerts: list[Alert]) -> dict[str, Any]:
    return {"alerts": [dataclasses.asdict(a) for a in alerts]}


async def take(daemon: DaemonView, alerts: list[Alert]) -> Answer:
    """Alerts to the engine, committed before the answer."""
    try:
        matched = await daemon.intake(alerts)
    except AlertCapReached as exc:
        return over_cap(alerts, exc)
    return Answer(200, {"received": len(alerts), "matched": matched})


# When a sender may try again alerts refused at a cap: about when some of those firing may
# have resolved. Alertmanager retries with its own backoff, and resends at its group_interval.
CAP_RETRY_AFTER = 60


def over_cap(alerts: list[Alert], exc: AlertCapReached) -> Answer:
    """429: Alertmanager retries it (not another 4xx), resending the whole group, and what was
    applied of it changes nothing the second time."""
    body = {
        "error": (
            f"{exc.refused} new firing alerts refused: their rule or runbookd has as many "
            "alerts firing as its cap (runbookd.alerts); the rest of the request was applied; "
            "send it again later"
        ),
        "received": len(alerts),
        "matched": sum(1 for rules in exc.routed if rules),
        "refused": exc.refused,
    }
    return Answer(429, body, {"Retry-After": str(CAP_RETRY_AFTER)})
