"""Deploys over HTTP: CI announces one, operators list them and read one with its timeline,
and Vercel's deployment webhooks arrive signed (daemon/deploys/vercel.py).

A Vercel delivery is answered 401 without a signature (before its body is read), with one that
does not verify (the same answer when no `deploys.vercel` is configured), and when its
`createdAt` is further than `max_age` from runbookd's clock: an old delivery replayed, or one
too late to judge the deploy by. A delivery received before answers 200 and changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict

import structlog
from aiohttp import web

from daemon.api.acts import VERCEL_CHALLENGE, perform
from daemon.api.auth import NOBODYS_SECRET, unauthorized
from daemon.api.bodies import (
    json_error,
    json_response,
    parse_model,
    read_body,
    read_json,
    refuse_non_finite,
    require_json,
)
from daemon.api.operator import query_limit
from daemon.api.port import DaemonView
from daemon.api.routes import Handler
from daemon.api.schemas import DeployBody
from daemon.core.units import format_duration
from daemon.deploys.models import DeployEvent, DeployStatus
from daemon.deploys.vercel import SIGNATURE_HEADER, VercelDelivery, signature_problem

log = structlog.get_logger("runbookd.api")

CHALLENGE = VERCEL_CHALLENGE


def deploy_handlers(daemon: DaemonView) -> dict[str, Handler]:
    """The deploy routes' handlers, by operation id (routes.OPERATIONS)."""

    async def announce(request: web.Request) -> web.Response:
        body = await read_json(request, DeployBody)
        event = DeployEvent(
            version=body.version,
            environment=body.environment,
            kind=body.kind,
            source="ci",
            commit=body.commit,
            by=body.by,
        )
        return await perform(daemon, "announceDeploy", {"event": asdict(event)})

    async def listing(request: web.Request) -> web.Response:
        status = request.query.get("status")
        if status is not None and status not in set(DeployStatus):
            choices = ", ".join(s.value for s in DeployStatus)
            return json_error(400, f"status: must be one of {choices}")
        found = await daemon.store.list_deploys(status=status, limit=query_limit(request))
        return json_response({"deploys": [d.to_json(with_timeline=False) for d in found]})

    async def one(request: web.Request) -> web.Response:
        deploy_id = request.match_info["id"]
        deploy = await daemon.store.get_deploy(deploy_id)
        if deploy is None:
            return json_error(404, f"no deploy {deploy_id!r}")
        return json_response(deploy.to_json())

    async def vercel(request: web.Request) -> web.Response:
        if SIGNATURE_HEADER not in request.headers:  # answered before the body is read
            raise unauthorized(f"missing {SIGNATURE_HEADER} header", CHALLENGE)
        raw = await read_body(request)
        deploys = daemon.config.deploys
        source = deploys.vercel if deploys is not None else None
        # Without a secret, checked against one nobody holds: the same work, the same answer.
        secret = source.webhook_secret.get_secret_value() if source else NOBODYS_SECRET
        problem = signature_problem(secret, request.headers, raw)
        if problem is not None or source is None:
            log.info("vercel delivery refused", reason=problem or "deploys.vercel not configured")
            raise unauthorized(problem or "bad signature", CHALLENGE)
        require_json(request)
        refuse_non_finite(raw)
        delivery = parse_model(raw, VercelDelivery)
        age = daemon.clock.now() - delivery.created_at
        if abs(age) > source.max_age:
            reason = (
                f"stale delivery: createdAt is {format_duration(round(abs(age)))} "
                f"{'before' if age > 0 else 'after'} runbookd's clock "
                f"(max_age {format_duration(source.max_age)})"
            )
            log.info("vercel delivery refused", reason=reason, delivery=delivery.id)
            raise unauthorized(reason, CHALLENGE)
        return await perform(daemon, "vercelEvent", {"delivery": delivery.model_dump(mode="json")})

    return {
        "announceDeploy": announce,
        "listDeploys": listing,
        "getDeploy": one,
        "vercelEvents": vercel,
    }
