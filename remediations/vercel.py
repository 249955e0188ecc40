"""`vercel_rollback` and `vercel_promote`: move a Vercel project's production traffic.

Documented endpoints (https://vercel.com/docs/rest-api): GET /v6/deployments (newest first;
`rollbackCandidate=true` keeps the deployments that have served production),
GET /v9/projects/{idOrName} (`targets.production` is the deployment production serves,
`lastAliasRequest` the state of the last alias switch), POST
/v1/projects/{projectId}/rollback/{deploymentId} with `description` as a query parameter,
POST /v10/projects/{projectId}/promote/{deploymentId} (202: queued behind an active rolling
release). Every call may carry the `teamId` and `slug` query parameters, and errors come as
{"error": {"code", "message"}}.

What production serves is only ever read from the project: the newest READY production
deployment may be a bad build already rolled back from, or a staged build that never served.
Both switch production asynchronously, so each polls the project until production serves
the deployment (or the alias job says it failed), within `verify_timeout`. Neither rebuilds
anything: a rollback or promote only moves the production domains between deployments
that already exist.

Over 400 lines: two types (rollback, promote) on one API client, its pagination and
its readiness polling.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator
from yarl import URL

from daemon.core.models import Incident, RemediationResult
from daemon.core.redaction import excerpt
from daemon.core.units import PositiveDuration
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext
from remediations.retry import RetryingConfig, check_http_url, redact, safe_url, send_json

API_URL = "https://api.vercel.com"
# Vercel's deployment and project objects run to several KiB each, more than send_json's
# excerpt: read whole JSON bodies, within this bound.
MAX_BODY_BYTES = 4 * 1024 * 1024
REASON_LIMIT = 200
ROLLED_BACK_FROM = "rolled_back_from"
# Promote's answer when it is queued behind an active rolling release.
QUEUED = 202
ApiPath = Sequence[str]


class VercelConfig(RetryingConfig):
    """What every Vercel remediation needs; `timeout` and `retry` bound each API call."""

    token: SecretStr = Field(
        description="A token from vercel.com/account/tokens, sent as `Authorization: Bearer`; "
        "prefer `token_file`."
    )
    project_id: str = Field(
        min_length=1, pattern=r"^[^/?#\s]+$", description="The project's id (`prj_...`) or name."
    )
    team_id: str | None = Field(
        default=None,
        min_length=1,
        description="The team that owns the project, by id (`teamId`); unset for a personal "
        "account.",
    )
    slug: str | None = Field(
        default=None, min_length=1, description="Or the team by its slug (`slug`)."
    )
    api_url: str = Field(API_URL, description="Vercel's REST API.")
    verify_timeout: PositiveDuration = Field(
        300.0, description="How long production may take to serve the new deployment."
    )
    poll_interval: PositiveDuration = Field(5.0, description="How often to look meanwhile.")
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
    retry_after: float | None = None

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
    substate: str | None = None
    rollback_candidate: bool = False

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
            substate=_text(raw.get("readySubstate")),
            rollback_candidate=raw.get("isRollbackCandidate") is True,
        )

    def as_data(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url}


@dataclass(frozen=True, slots=True)
class Project:
    name: str
    production: Deployment | None
    # The last alias switch (rollback or promote): its target and job status.
    alias_target: str | None = None
    alias_status: str | None = None

    @property
    def production_id(self) -> str | None:
        return self.production.id if self.production else None

    def switch_failed(self, deployment_id: str) -> bool:
        return self.alias_target == deployment_id and self.alias_status in ("failed", "skipped")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class VercelClient:
    """Calls to one project with the config's token, team scope and retry policy."""

    def __init__(self, ctx: RemediationContext, config: VercelConfig) -> None:
        self.ctx = ctx
        self.config = config
        self._secrets = [config.token.get_secret_value()]

    def conceal(self, *values: str) -> None:
        """Mask these values too (secrets sent or read) in every reply and failure."""
        self._secrets.extend(value for value in values if value)

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
        attempts: int | None = None,
        idempotent: bool = True,
    ) -> Reply:
        """One call, retried by send_json's policy (429 after Retry-After, 5xx, network), at
        most `attempts` times (default: the config's); not `idempotent`, only a 429 or a
        connection never made is retried."""
        retry = self.config.retry
        outcome = await send_json(
            self.ctx,
            method,
            self._url(path, query or {}),
            body,
            headers={"Authorization": f"Bearer {self._secrets[0]}"},
            attempt_timeout=self.config.timeout,
            attempts=attempts or retry.attempts,
            base_delay=retry.base_delay,
            max_delay=retry.max_delay,
            redact_values=self._secrets,
            max_body=MAX_BODY_BYTES,
            idempotent=idempotent,
        )
        return Reply(
            status=outcome.status,
            body=outcome.json(),
            error=outcome.error,
            recoverable=outcome.recoverable,
            attempts=outcome.attempts,
            delays=outcome.delays,
            retry_after=outcome.retry_after if outcome.recoverable else None,
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
        if reply.retry_after is not None:
            data["retry_after_seconds"] = reply.retry_after
            reason += f" (retry after {reply.retry_after:g}s)"
        code, _ = api_error(reply.body)
        if code:
            data["error_code"] = redact(code, self._secrets)
        detail = f"{step}: {reason}"
        return RemediationResult(
            False,
            detail,
            recoverable=reply.recoverable,
            data=data,
            retry_after=reply.retry_after,
        )

    async def production_deployments(
        self, limit: int, *, candidates: bool = False
    ) -> list[Deployment]:
        """READY production deployments of the project, newest first; with `candidates`,
        only those Vercel marks as rollback candidates (they have served production)."""
        query = {
            "projectId": self.config.project_id,
            "target": "production",
            "state": "READY",
            "limit": str(limit),
        }
        if candidates:
            query["rollbackCandidate"] = "true"
        body = await self.call("list deployments", "GET", ("v6", "deployments"), query=query)
        raw = body.get("deployments") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            raise VercelFailure(unexpected("list deployments", "no deployments list"))
        parsed = (Deployment.parse(item) for item in raw)
        # Filtered again here: a deployment that is not READY must never become a target.
        ready = [d for d in parsed if d and d.state == "READY" and d.target == "production"]
        if candidates:
            ready = [d for d in ready if d.rollback_candidate]
        return sorted(ready, key=lambda d: d.created, reverse=True)

    async def project(self) -> Project:
        body = await self.call("read project", "GET", ("v9", *self.project_path))
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise VercelFailure(unexpected("read project", "no project name"))
        targets = body.get("targets")
        production = targets.get("production") if isinstance(targets, dict) else None
        alias = body.get("lastAliasRequest")
        alias = alias if isinstance(alias, dict) else {}
        return Project(
            name=body["name"],
            production=Deployment.parse(production),
            alias_target=_text(alias.get("toDeploymentId")),
            alias_status=_text(alias.get("jobStatus")),
        )

    async def serves(self, deployment_id: str) -> bool:
        """Whether production serves `deployment_id`; a failed alias switch to it ends the
        wait at once (VercelFailure) instead of after verify_timeout."""
        project = await self.project()
        if project.switch_failed(deployment_id):
            detail = f"Vercel's alias switch to {deployment_id} ended {project.alias_status}"
            raise VercelFailure(RemediationResult(False, detail, recoverable=False))
        return project.production_id == deployment_id

    async def switch(
        self, step: str, path: ApiPath, deployment_id: str, query: Mapping[str, str] | None = None
    ) -> int | None:
        """POST a rollback or promote of production to `deployment_id`; the status."""
        reply = await self.request("POST", path, query=query)
        # Vercel refuses to move production to where it already is; for a rerun that is
        # success, not a conflict.
        if not reply.ok and not (reply.status == 409 and await self.serves(deployment_id)):
            raise VercelFailure(self.failure(step, reply))
        return reply.status

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
    """Moves production from the deployment the project serves (`targets.production`) to
    the newest older deployment that has served production (Vercel's rollback candidates):
    staged builds and builds already rolled back from are never targets. Then waits until
    production serves it. Nothing is rebuilt. After a rollback Vercel stops assigning
    production domains to new builds until a promote (`vercel_promote`)."""

    example: ClassVar[str] = """
        remediations:
          rollback:
            type: vercel_rollback
            token: ${VERCEL_TOKEN}
            project_id: prj_12HKQaOmR5t5Uy6vdcQsNIiZgHGB
            team_id: team_a1b2c3d4e5f6g7h8i9j0k1l2
        """

    type: Literal["vercel_rollback"]
    search_limit: int = Field(
        default=20,
        ge=2,
        le=100,
        description="How many production deployments to fetch when looking for the previous one.",
    )


class PromoteConfig(VercelConfig):
    """Promotes a deployment to production: the way back after `vercel_rollback` (Vercel
    then assigns production domains to new builds again). With rolling releases a promote is
    queued behind the active release (HTTP 202) and reported as not done."""

    example: ClassVar[str] = """
        remediations:
          promote_latest:
            type: vercel_promote
            token: ${VERCEL_TOKEN}
            project_id: my-app
            require_approval: true
        """

    type: Literal["vercel_promote"]
    deployment_id: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^[^/?#\s]+$",
        description="The deployment to promote; default: the newest READY production "
        "deployment newer than the one production serves (the one a rollback moved away "
        "from, or a fix since).",
    )
    search_limit: int = Field(
        default=20,
        ge=1,
        le=100,
        description="How many production deployments to fetch when looking for it.",
    )
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
        current = (await client.project()).production
        if current is None:
            detail = "the project has no production deployment to roll back from"
            scope = {"project": self.config.project_id}
            return RemediationResult(False, detail, recoverable=False, data=scope)
        plan = await self._plan(client, incident, current)
        if isinstance(plan, RemediationResult):
            return plan
        source, target = plan
        description = rollback_description(incident)
        path = ("v1", *client.project_path, "rollback", target.id)
        await client.switch("rollback", path, target.id, {"description": description})
        record = {**source.as_data(), "incident": incident.id, "to": target.id}
        await client.ctx.state.put(ROLLED_BACK_FROM, record)
        polls = await client.poll(lambda: client.serves(target.id))
        data = {
            "from_deployment": source.as_data(),
            "to_deployment": target.as_data(),
            "description": description,
        }
        return switched(client, "rollback", target, polls, data)

    async def _plan(
        self, client: VercelClient, incident: Incident, current: Deployment
    ) -> tuple[Deployment, Deployment] | RemediationResult:
        """(from, to): the way back from what production serves, to the newest rollback
        candidate older than it. A rerun for the same incident keeps its first target, so a
        rollback that completed after a timeout is never taken one step further."""
        candidates = await client.production_deployments(self.config.search_limit, candidates=True)
        prior = await client.ctx.state.get(ROLLED_BACK_FROM)
        if isinstance(prior, dict) and prior.get("incident") == incident.id:
            by_id = {d.id: d for d in candidates}
            target = by_id.get(str(prior.get("to")))
            if target is not None:
                source = Deployment(str(prior.get("id")), _text(prior.get("url")), "", None, 0.0)
                return source, target
        # Only older ones: a newer candidate is a build production was already moved away from.
        older = [d for d in candidates if d.id != current.id and d.created < current.created]
        if not older:
            detail = f"no rollback candidate older than {current.id}, which production serves"
            data = {
                "project": self.config.project_id,
                "from_deployment": current.as_data(),
                "rollback_candidates": len(candidates),
            }
            return RemediationResult(False, detail, recoverable=False, data=data)
        return current, older[0]


def queued(client: VercelClient, target: Deployment) -> RemediationResult:
    """Promote answered 202: queued behind an active rolling release, so production does not
    move until a person completes or aborts that release; asking again changes nothing."""
    detail = (
        f"promote: queued behind an active rolling release (HTTP 202); production does not "
        f"serve {target.id} until that release is completed or aborted in Vercel"
    )
    data = {"project": client.config.project_id, "to_deployment": target.as_data(), "queued": True}
    return RemediationResult(False, detail, recoverable=False, data=data)


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
        if await client.switch("promote", path, target.id) == QUEUED:
            return queued(client, target)
        polls = await client.poll(lambda: client.serves(target.id))
        return switched(client, "promote", target, polls, {"to_deployment": target.as_data()})

    async def _target(self, client: VercelClient) -> Deployment | RemediationResult:
        if self.config.deployment_id is not None:
            return Deployment(self.config.deployment_id, None, "", "production", 0.0)
        ready = await client.production_deployments(self.config.search_limit)
        current = (await client.project()).production
        data: dict[str, Any] = {"project": self.config.project_id, "production": None}
        if current is None or current.id not in [d.id for d in ready]:
            served = current.id if current else "nothing"
            data["production"] = current.id if current else None
            detail = (
                f"production serves {served}, not one of the {len(ready)} newest READY "
                "production deployments; set deployment_id"
            )
            return RemediationResult(False, detail, recoverable=False, data=data)
        data["production"] = current.id
        newer = [d for d in ready if d.created > current.created]
        if not newer:
            detail = f"production already serves the newest READY deployment {current.id}"
            return RemediationResult(True, detail, data={**data, "polls": 0})
        return newer[0]
