"""Alerts pushed by other systems: the Alertmanager webhook (and Grafana's superset), and
generic JSON webhooks mapped to alerts by the paths configured under `webhooks:`."""

from __future__ import annotations

from aiohttp import web

from daemon.alerts import AlertmanagerWebhook, alert_from_json
from daemon.api import DaemonView, json_error, parse_json, read_body, read_json, require_json
from daemon.auth import bearer, same_secret, signature_problem, unauthorized
from daemon.config import WebhookAuth


def intake_routes(daemon: DaemonView) -> list[web.RouteDef]:
    async def alertmanager(request: web.Request) -> web.Response:
        body = await read_json(request, AlertmanagerWebhook)
        alerts = body.to_alerts()
        matched = await daemon.intake(alerts)
        return web.json_response({"received": len(alerts), "matched": matched})

    async def webhook(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        # Read at each request: a reload (SIGHUP) changes the webhooks without a restart.
        config = daemon.config.webhooks.get(name)
        if config is None:
            return json_error(404, f"no webhook {name!r}")
        raw = await read_body(request)
        check_sender(config.auth, request, raw, daemon.clock.now())
        require_json(request)
        try:
            alert = alert_from_json(parse_json(raw), config.fields, f"webhook:{name}")
        except ValueError as exc:
            return json_error(400, str(exc))
        matched = await daemon.intake([alert])
        return web.json_response({"received": 1, "matched": matched})

    return [
        web.post("/api/v1/alerts", alertmanager),
        web.post("/api/v1/webhooks/{name}", webhook),
    ]


def check_sender(auth: WebhookAuth, request: web.Request, raw: bytes, now: float) -> None:
    """401 unless the request carries the webhook's signature (over the raw bytes) or token."""
    if auth.hmac_secret is not None:
        secret = auth.hmac_secret.get_secret_value()
        problem = signature_problem(secret, request.headers, raw, now=now, tolerance=auth.tolerance)
        if problem is not None:
            raise unauthorized(problem, 'Signature realm="runbookd"')
    elif auth.token is not None:
        presented = bearer(request.headers) or ""
        if not same_secret(presented, auth.token.get_secret_value()):
            raise unauthorized("missing or invalid bearer token")
