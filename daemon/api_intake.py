"""Alerts pushed by other systems: the Alertmanager webhook (and Grafana's superset), and
generic JSON webhooks mapped to alerts by the paths configured under `webhooks:`."""

from __future__ import annotations

from aiohttp import web

from daemon.alerts import AlertmanagerWebhook, alert_from_json
from daemon.api import DaemonView, json_error, parse_json, read_body, read_json, require_json
from daemon.auth import (
    ReplayGuard,
    bearer,
    replay_capacity,
    same_secret,
    signature_problem,
    signature_window,
    unauthorized,
)
from daemon.config import WebhookAuth, WebhookConfig

REPLAYED = "X-Runbookd-Signature: this signed request was accepted already (a replay?)"


def intake_routes(daemon: DaemonView) -> list[web.RouteDef]:
    replays = ReplayGuard()

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
        now = daemon.clock.now()
        check_sender(config.auth, request, raw, now)
        if config.auth.hmac_secret is None:
            return await deliver(request, name, config, raw)
        return await deliver_once(request, name, config, raw, now)

    async def deliver_once(
        request: web.Request, name: str, config: WebhookConfig, raw: bytes, now: float
    ) -> web.Response:
        """A signed request, accepted once: admitted before it is processed (two copies sent
        at once are not both taken) and forgotten again if it is not accepted after all (the
        sender may send it again)."""
        signature, until = signature_window(request.headers, config.auth.tolerance)
        key = f"{name}:{signature}"
        cap = replay_capacity(daemon.config.runbookd.api.rate_limit, config.auth.tolerance)
        if not replays.admit(key, until, now=now, cap=cap):
            # 409, not 401: the sender proved itself, and this request is already accepted;
            # a sender retrying after a lost answer must not think its secret is wrong.
            return json_error(409, REPLAYED)
        try:
            response = await deliver(request, name, config, raw)
        except BaseException:
            replays.forget(key)
            raise
        if response.status != 200:
            replays.forget(key)
        return response

    async def deliver(
        request: web.Request, name: str, config: WebhookConfig, raw: bytes
    ) -> web.Response:
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
