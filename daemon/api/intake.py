"""Alerts pushed by other systems: the Alertmanager webhook (and Grafana's, signed or not),
and generic JSON webhooks mapped to alerts by the paths configured under `webhooks:`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from daemon.api import acts
from daemon.api.acts import alerts_args, respond
from daemon.api.auth import (
    BEARER_REFUSED,
    NO_CREDENTIALS,
    NOBODYS_SECRET,
    REALM,
    SIGNATURE_CHALLENGE,
    WEBHOOK_CHALLENGES,
    ReplayGuard,
    bearer,
    grafana_problem,
    presents_signature,
    public_problem,
    replay_capacity,
    same_secret,
    signature_problem,
    signature_window,
    unauthorized,
)
from daemon.api.bodies import (
    json_error,
    parse_json,
    parse_model,
    read_body,
    refuse_non_finite,
    require_json,
)
from daemon.api.port import DaemonView
from daemon.api.routes import Handler
from daemon.config.settings import GrafanaSigning
from daemon.config.webhooks import WebhookAuth, WebhookConfig
from daemon.engine.alerts import Alert, AlertmanagerWebhook, alerts_from_json

log = structlog.get_logger("runbookd.api")

REPLAYED = "X-Runbookd-Signature: this signed request was accepted already (a replay?)"
GRAFANA_REPLAYED = "this signed Grafana request was accepted already (a replay?)"
GRAFANA_CHALLENGE = 'Signature realm="runbookd-grafana"'
# The tolerance of a signed request to a webhook that has no secret (or does not exist).
DEFAULT_TOLERANCE = WebhookAuth.model_fields["tolerance"].default


def intake_handlers(daemon: DaemonView) -> dict[str, Handler]:
    """The intake routes' handlers, by operation id (routes.OPERATIONS)."""
    replays = ReplayGuard()

    async def alertmanager(request: web.Request) -> web.Response:
        require_json(request)
        raw = await read_body(request)
        refuse_non_finite(raw)
        signing = daemon.config.runbookd.api.grafana
        signed = signing is not None and signing.header in request.headers
        if signed:  # checked before the body is looked at
            assert signing is not None
            return await grafana_once(request, signing, raw)
        body = validate(raw)
        if signing is not None and body.version == "1":
            reason = f"missing {signing.header} header: Grafana's notifications must be signed"
            raise unauthorized(reason, GRAFANA_CHALLENGE)
        return await take(body.to_alerts())

    async def grafana_once(
        request: web.Request, signing: GrafanaSigning, raw: bytes
    ) -> web.Response:
        now = daemon.clock.now()
        problem = grafana_problem(signing, request.headers, raw, now=now)
        if problem is not None:
            log.info("grafana request refused", reason=problem)
            raise unauthorized(problem, GRAFANA_CHALLENGE)
        key = f"grafana:{request.headers[signing.header].lower()}"
        until = int(request.headers[signing.timestamp_header]) + signing.tolerance
        cap = replay_capacity(daemon.config.runbookd.api.rate_limit, signing.tolerance)
        return await accepted_once(key, until, now, cap, GRAFANA_REPLAYED, lambda: take_raw(raw))

    async def take_raw(raw: bytes) -> web.Response:
        return await take(validate(raw).to_alerts())

    async def accepted_once(
        key: str,
        until: float,
        now: float,
        cap: int,
        replayed: str,
        deliver: Callable[[], Awaitable[web.Response]],
    ) -> web.Response:
        """A signed request, accepted once: admitted before it is processed (two copies sent
        at once are not both taken) and forgotten again if it is not accepted after all (the
        sender may send it again)."""
        if not replays.admit(key, until, now=now, cap=cap):
            # 409, not 401: the sender proved itself, and this request is already accepted;
            # a sender retrying after a lost answer must not think its secret is wrong.
            return json_error(409, replayed)
        try:
            response = await deliver()
        except BaseException:
            replays.forget(key)
            raise
        if response.status != 200:
            replays.forget(key)
        return response

    async def take(alerts: list[Alert]) -> web.Response:
        if daemon.role() == "standby":  # the leader takes them; alerts_args only then
            return respond(await daemon.forward("intake", alerts_args(alerts)))
        answer = await acts.take(daemon, alerts)
        if answer.status == 200 and not answer.headers:
            return taken(answer.body["received"], answer.body["matched"])
        return respond(answer)

    async def webhook(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        # Read at each request: a reload (SIGHUP) changes the webhooks without a restart.
        config = daemon.config.webhooks.get(name)
        now = daemon.clock.now()
        raw = await authenticated_body(name, config, request, now)
        if config is None:  # not reached: nobody holds the secret it was checked against
            raise unauthorized(NO_CREDENTIALS, WEBHOOK_CHALLENGES)
        if config.auth.hmac_secret is None:
            return await deliver(request, name, config, raw)
        return await deliver_once(request, name, config, raw, now)

    async def deliver_once(
        request: web.Request, name: str, config: WebhookConfig, raw: bytes, now: float
    ) -> web.Response:
        signature, until = signature_window(request.headers, config.auth.tolerance)
        cap = replay_capacity(daemon.config.runbookd.api.rate_limit, config.auth.tolerance)
        return await accepted_once(
            f"{name}:{signature}",
            until,
            now,
            cap,
            REPLAYED,
            lambda: deliver(request, name, config, raw),
        )

    async def deliver(
        request: web.Request, name: str, config: WebhookConfig, raw: bytes
    ) -> web.Response:
        require_json(request)
        try:
            doc = parse_json(raw)
            alerts = alerts_from_json(doc, config.fields, f"webhook:{name}", config.each or "")
        except ValueError as exc:
            return json_error(400, str(exc))
        return await take(alerts)

    return {"alertmanagerWebhook": alertmanager, "genericWebhook": webhook}


# What json_response writes for the answer to alerts taken, without encoding a dict each time
# (the one answer of a stream of webhooks): {"received": n, "matched": m}.
TAKEN = b'{"received": %d, "matched": %d}'
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def taken(received: int, matched: int) -> web.Response:
    return web.Response(body=TAKEN % (received, matched), headers=JSON_HEADERS)


def validate(raw: bytes) -> AlertmanagerWebhook:
    """The body as Alertmanager's (or Grafana's) webhook, or 400 naming the field."""
    return parse_model(raw, AlertmanagerWebhook)


async def authenticated_body(
    name: str, config: WebhookConfig | None, request: web.Request, now: float
) -> bytes:
    """The body of a request whose sender proved itself with the webhook's secret, else 401.

    What happens depends on what the request presents, never on whether the webhook exists or
    which scheme it has (its name cannot be found out by trying): no credentials, 401 at once;
    a bearer token, compared before any of the body is read; a signature, checked over the
    body read first (bounded by max_body). Where the webhook has no secret of that kind (or
    does not exist), the same work is done against a secret nobody holds."""
    auth = config.auth if config is not None else None
    if presents_signature(request.headers):
        raw = await read_body(request)
        _check_signature(name, auth, request, raw, now)
        return raw
    presented = bearer(request.headers)
    if presented is None:
        raise unauthorized(NO_CREDENTIALS, WEBHOOK_CHALLENGES)
    token = auth.token if auth is not None else None
    if not same_secret(presented, token.get_secret_value() if token else NOBODYS_SECRET):
        if config is not None:
            log.info("webhook request refused", webhook=name, reason="not its bearer token")
        raise unauthorized(BEARER_REFUSED, REALM)
    return await read_body(request)


def _check_signature(
    name: str, auth: WebhookAuth | None, request: web.Request, raw: bytes, now: float
) -> None:
    secret = auth.hmac_secret if auth is not None else None
    tolerance = auth.tolerance if auth is not None and secret is not None else DEFAULT_TOLERANCE
    key = secret.get_secret_value() if secret is not None else NOBODYS_SECRET
    problem = signature_problem(key, request.headers, raw, now=now, tolerance=tolerance)
    if problem is None:
        return
    if auth is not None:  # the operator's sender, misconfigured: the log says exactly why
        reason = problem if secret is not None else "it takes a bearer token, not a signature"
        log.info("webhook request refused", webhook=name, reason=reason)
    raise unauthorized(public_problem(problem), SIGNATURE_CHALLENGE)
