"""`vercel_rollback` and `vercel_promote`: move a Vercel project's production traffic.

Documented endpoints (https://vercel.com/docs/rest-api): GET /v6/deployments (newest first),
GET /v9/projects/{idOrName} (`targets.production.id` is the deployment production serves),
POST /v1/projects/{projectId}/rollback/{deploymentId} with `description` as a query
parameter, POST /v10/projects/{projectId}/promote/{deploymentId}. Every call may carry the
`teamId` and `slug` query parameters, and errors come as {"error": {"code", "message"}}.

Both switch production asynchronously, so each polls the project until production serves
the deployment, within `verify_timeout`. Neither rebuilds anything: a rollback or promote
only moves the production domains between deployments that already exist.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator
from yarl import URL

from daemon.models import Incident, RemediationResult
from daemon.redaction import excerpt
from daemon.units import PositiveDuration
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext
from remediations.retry import RetryingConfig, check_http_url, redact, safe_url, send_json

API_URL = "https://api.vercel.com"
# Vercel's deployment and project objects run to several KiB each, more than send_json's
# excerpt: read whole JSON bodies, within this bound.
MAX_BODY_BYTES = 4 * 1024 * 1024
REASON_LIMIT = 200
ROLLED_BACK_FROM = "rolled_back_from"
ApiPath = Sequence[str]


class VercelConfig(RetryingConfig):
    """What every Vercel remediation needs; `timeout` and `retry` bound each API call."""

    # A token from vercel.com/account/tokens, sent as `Authorization: Bearer`; prefer
    # token_file.
    token: SecretStr
    # The project's id (prj_...) or name.
    project_id: str = Field(min_length=1, pattern=r"^[^/?#\s]+$")
    # The team that owns the project, by id (`teamId`) or slug (`slug`); neither for a
    # personal account.
    team_id: str | None = Field(default=None, min_length=1)
    slug: str | None = Field(default=None, min_length=1)
    api_url: str = API_URL
    # How long production may take to serve the new deployment, and how often to look.
    verify_timeout: PositiveDuration = 300.0
    poll_interval: PositiveDuration = 5.0
    # API calls one run may make besides polling; with verify_timeout it bounds a run.
    api_calls: ClassVar[int] = 4

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("token is empty")
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return check_http_url(value)

    def deadline(self) -> float:
        # The last poll may start just before verify_timeout and run its full retries.
        return (self.api_calls + 1) * super().deadline() + self.verify_timeout


@dataclass(frozen=True, slots=True)
class Reply:
    """Vercel's answer to one call, retries included; `body` is parsed JSON or None."""

    status: int | None
    body: Any = None
    error: str = ""
    recoverable: bool = False
    attempts: int = 1
    delays: tuple[float, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and not self.error


class VercelFailure(Exception):
    """A call failed: carries the result the remediation returns (caught in execute)."""

    def __init__(self, result: RemediationResult) -> None:
        super().__init__(result.detail)
        self.result = result


@dataclass(frozen=True, slots=True)
class Deployment:
    id: str
    url: str | None
    state: str
    target: str | None
    created: float

    @classmethod
    def parse(cls, raw: object) -> Deployment | None:
        """Both shapes: the list's (uid, state, created) and v13's (id, readyState, createdAt)."""
        if not isinstance(raw, dict):
            return None
        ident = raw.get("uid") or raw.get("id")
        if not isinstance(ident, str) or not ident:
            return None
        created = raw.get("createdAt") or raw.get("created")
        return cls(
            id=ident,
            url=_text(raw.get("url")),
            state=_text(raw.get("readyState") or raw.get("state")) or "",
            target=_text(raw.get("target")),
            created=float(created) if isinstance(created, int | float) else 0.0,
        )

    def as_data(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url}


@dataclass(frozen=True, slots=True)
class Project:
    name: str
    production_id: str | None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class VercelClient:
    """Calls to one project with the config's token, team scope and retry policy."""

    def __init__(self, ctx: RemediationContext, config: VercelConfig) -> None:
        self.ctx = ctx
        self.config = config
        self._secrets = [config.token.get_secret_value()]

    @property
    def project_path(self) -> tuple[str, ...]:
        return ("projects", self.config.project_id)

    async def request(
        self,
        method: str,
        path: ApiPath,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Reply:
        """One call, retried by send_json's policy (429 after Retry-After, 5xx, network)."""
        retry = self.config.retry
        outcome = await send_json(
            self.ctx,
            method,
            self._url(path, query or {}),
            body,
            headers={"Authorization": f"Bearer {self._secrets[0]}"},
            attempt_timeout=self.config.timeout,
            attempts=retry.attempts,
            base_delay=retry.base_delay,
            max_delay=retry.max_delay,
            redact_values=self._secrets,
            max_body=MAX_BODY_BYTES,
        )
        return Reply(
            status=outcome.status,
            body=outcome.json(),
            error=outcome.error,
            recoverable=outcome.recoverable,
            attempts=outcome.attempts,
            delays=outcome.delays,
        )

    async def call(
        self,
        step: str,
        method: str,
        path: ApiPath,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        """The response body of a successful call; any failure raises VercelFailure."""
        reply = await self.request(method, path, query=query, body=body)
        if not reply.ok:
            raise VercelFailure(self.failure(step, reply))
        return reply.body

    def failure(self, step: str, reply: Reply) -> RemediationResult:
        reason = describe(reply, self._secrets)
        if reply.recoverable and reply.attempts > 1:
            reason = f"gave up after {reply.attempts} attempts, last: {reason}"
        data: dict[str, Any] = {
            "step": step,
            "api": safe_url(self.config.api_url),
            "status": reply.status,
            "attempts": reply.attempts,
        }
        if reply.delays:
            data["backoff_seconds"] = list(reply.delays)
        code, _ = api_error(reply.body)
        if code:
            data["error_code"] = redact(code, self._secrets)
        detail = f"{step}: {reason}"
        return RemediationResult(False, detail, recoverable=reply.recoverable, data=data)

    async def production_deployments(self, limit: int) -> list[Deployment]:
        """READY production deployments of the project, newest first."""
        query = {
            "projectId": self.config.project_id,
            "target": "production",
            "state": "READY",
            "limit": str(limit),
        }
        body = await self.call("list deployments", "GET", ("v6", "deployments"), query=query)
        raw = body.get("deployments") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            raise VercelFailure(unexpected("list deployments", "no deployments list"))
        parsed = (Deployment.parse(item) for item in raw)
        # Filtered again here: a deployment that is not READY must never become a target.
        ready = [d for d in parsed if d and d.state == "READY" and d.target == "production"]
        return sorted(ready, key=lambda d: d.created, reverse=True)

    async def project(self) -> Project:
        body = await self.call("read project", "GET", ("v9", *self.project_path))
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise VercelFailure(unexpected("read project", "no project name"))
        targets = body.get("targets")
        production = targets.get("production") if isinstance(targets, dict) else None
        current = production.get("id") if isinstance(production, dict) else None
        return Project(name=body["name"], production_id=_text(current))

    async def serves(self, deployment_id: str) -> bool:
        return (await self.project()).production_id == deployment_id

    async def switch(
        self, step: str, path: ApiPath, deployment_id: str, query: Mapping[str, str] | None = None
    ) -> None:
        """POST a rollback or promote of production to `deployment_id`."""
        reply = await self.request("POST", path, query=query)
        # Vercel refuses to move production to where it already is; for a rerun that is
        # success, not a conflict.
        if not reply.ok and not (reply.status == 409 and await self.serves(deployment_id)):
            raise VercelFailure(self.failure(step, reply))

    async def poll(self, done: Callable[[], Awaitable[bool]]) -> tuple[bool, int]:
        """Ask `done` every poll_interval until it says yes or verify_timeout passes."""
        clock = self.ctx.clock
        deadline = clock.now() + self.config.verify_timeout
        polls = 0
        while True:
            polls += 1
            if await done():
                return True, polls
            if clock.now() + self.config.poll_interval > deadline:
                return False, polls
            await clock.sleep(self.config.poll_interval)

    def _url(self, path: ApiPath, query: Mapping[str, str]) -> URL:
        params = dict(query)
        if self.config.team_id is not None:
            params["teamId"] = self.config.team_id
        if self.config.slug is not None:
            params["slug"] = self.config.slug
        return URL(self.config.api_url).joinpath(*path).with_query(params)


def api_error(body: object) -> tuple[str, str]:
    """Code and message of Vercel's error body {"error": {"code", "message"}}, or blanks."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    code, message = error.get("code"), error.get("message")
    return (code if isinstance(code, str) else ""), (message if isinstance(message, str) else "")


def describe(reply: Reply, secrets: Sequence[str]) -> str:
    """Why a call failed, short: what it means for us, then Vercel's own code and message,
    with `secrets` masked."""
    if reply.status is None or reply.error:
        return redact(reply.error, secrets)
    code, message = api_error(reply.body)
    said = ": ".join(part for part in (code, message) if part)
    status = excerpt(f"HTTP {reply.status}" + (f" {said}" if said else ""), REASON_LIMIT, secrets)
    if reply.status in (401, 403):
        return f"token rejected ({status})"
    if reply.status == 404:
        return f"project or deployment not found ({status})"
    if reply.status == 409:
        return f"conflict ({status})"
    return status


def unexpected(step: str, what: str) -> RemediationResult:
    # A 2xx we cannot read is not fixed by asking again right away, but may be by a later run.
    return RemediationResult(False, f"{step}: unexpected response ({what})", recoverable=True)


class RollbackConfig(VercelConfig):
    type: Literal["vercel_rollback"]
    # How many READY production deployments to fetch when looking for the previous one.
    search_limit: int = Field(default=20, ge=2, le=100)


class PromoteConfig(VercelConfig):
    type: Literal["vercel_promote"]
    # Promote this deployment; by default the newest READY production deployment newer than
    # the one production serves (the one a rollback moved away from, or a fix since).
    deployment_id: str | None = Field(default=None, min_length=1, pattern=r"^[^/?#\s]+$")
    search_limit: int = Field(default=20, ge=1, le=100)
    api_calls: ClassVar[int] = 5


class VercelRemediation(Hooks):
    # Moving production between existing deployments loses nothing and can be moved back
    # (vercel_promote), so no approval by default; doing it twice has the same effect.
    idempotent: bool = True
    destructive: bool = False
    notifier: bool = False

    async def _run(
        self,
        ctx: RemediationContext,
        config: VercelConfig,
        action: Callable[[VercelClient], Awaitable[RemediationResult]],
    ) -> RemediationResult:
        try:
            return await action(VercelClient(ctx, config))
        except VercelFailure as failure:
            failure.result.data.setdefault("project", config.project_id)
            return failure.result


def switched(
    client: VercelClient,
    action: str,
    target: Deployment,
    polls: tuple[bool, int],
    data: dict[str, Any],
) -> RemediationResult:
    """The result once production was told to move to `target` and was watched."""
    served, count = polls
    data = {"project": client.config.project_id, **data, "polls": count}
    if served:
        return RemediationResult(True, f"{action}: production serves {target.id}", data=data)
    timeout = client.config.verify_timeout
    detail = f"{action}: production does not serve {target.id} after {timeout:g}s"
    return RemediationResult(False, detail, recoverable=True, data=data)


@REMEDIATIONS.register
class VercelRollback(VercelRemediation):
    """Point production back at the previous READY production deployment."""

    type: ClassVar[str] = "vercel_rollback"
    Config: ClassVar[builtins.type[RemediationConfig]] = RollbackConfig

    def __init__(self, name: str, config: RollbackConfig) -> None:
        self.name = name
        self.config = config

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        return await self._run(ctx, self.config, lambda client: self._rollback(client, incident))

    async def _rollback(self, client: VercelClient, incident: Incident) -> RemediationResult:
        ready = await client.production_deployments(self.config.search_limit)
        if len(ready) < 2:
            detail = "no previous READY production deployment to roll back to"
            data = {"project": self.config.project_id, "ready_deployments": len(ready)}
            return RemediationResult(False, detail, recoverable=False, data=data)
        # The newest READY one is taken as production; the next older one is the way back.
        current, previous = ready[0], ready[1]
        description = rollback_description(incident)
        path = ("v1", *client.project_path, "rollback", previous.id)
        await client.switch("rollback", path, previous.id, {"description": description})
        await client.ctx.state.put(ROLLED_BACK_FROM, {**current.as_data(), "incident": incident.id})
        polls = await client.poll(lambda: client.serves(previous.id))
        data = {
            "from_deployment": current.as_data(),
            "to_deployment": previous.as_data(),
            "description": description,
        }
        return switched(client, "rollback", previous, polls, data)


def rollback_description(incident: Incident) -> str:
    """Shown in Vercel's dashboard beside the rollback: says who did it and why."""
    return f"runbookd: incident {incident.id} (rule {incident.rule})"


@REMEDIATIONS.register
class VercelPromote(VercelRemediation):
    """Point production at a newer deployment again: the way back from a rollback."""

    type: ClassVar[str] = "vercel_promote"
    Config: ClassVar[builtins.type[RemediationConfig]] = PromoteConfig

    def __init__(self, name: str, config: PromoteConfig) -> None:
        self.name = name
        self.config = config

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        return await self._run(ctx, self.config, self._promote)

    async def _promote(self, client: VercelClient) -> RemediationResult:
        target = await self._target(client)
        if isinstance(target, RemediationResult):
            return target
        path = ("v10", *client.project_path, "promote", target.id)
        await client.switch("promote", path, target.id)
        polls = await client.poll(lambda: client.serves(target.id))
        return switched(client, "promote", target, polls, {"to_deployment": target.as_data()})

    async def _target(self, client: VercelClient) -> Deployment | RemediationResult:
        if self.config.deployment_id is not None:
            return Deployment(self.config.deployment_id, None, "", "production", 0.0)
        ready = await client.production_deployments(self.config.search_limit)
        current = (await client.project()).production_id
        ids = [d.id for d in ready]
        data: dict[str, Any] = {"project": self.config.project_id, "production": current}
        if current not in ids:
            detail = (
                f"production serves {current or 'nothing'}, not one of the {len(ids)} newest READY "
                "production deployments; set deployment_id"
            )
            return RemediationResult(False, detail, recoverable=False, data=data)
        newer = ready[: ids.index(current)]
        if not newer:
            detail = f"production already serves the newest READY deployment {current}"
            return RemediationResult(True, detail, data={**data, "polls": 0})
        return newer[0]
