"""`vercel_env`: maintenance mode on Vercel by an environment variable, undone on resolve.

A variable only reaches the application in a new build, so setting it is followed by a
redeploy of the deployment production serves, watched until READY and then until production
serves it: after a rollback Vercel no longer assigns production domains to new builds, which
settle READY with `readySubstate: STAGED` and never serve. BLOCKED is final, like ERROR.
The redeploy is never retried blindly: a retry after a timeout could start a second build.
With `remove: true` a run deletes the variable and redeploys instead: maintenance mode off as
a procedure's step or undo (a procedure runs remediations, it does not resolve them).
Variable lists are paged (`pagination.next` goes back as `until`). Documented endpoints:
POST /v10/projects/{idOrName}/env?upsert=true with {"key", "value", "type", "target"}
(answers {"created": ..., "failed": [...]}), GET /v10/projects/{idOrName}/env ({"envs"}),
DELETE /v9/projects/{idOrName}/env/{id}, POST /v13/deployments with {"name",
"deploymentId", "target"} to redeploy an existing deployment, GET /v13/deployments/{id}.
"""

from __future__ import annotations

import builtins
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from daemon.core.models import Incident, RemediationResult
from daemon.core.redaction import excerpt
from remediations.base import REMEDIATIONS, RemediationConfig, RemediationContext
from remediations.vercel import (
    REASON_LIMIT,
    Deployment,
    VercelClient,
    VercelConfig,
    VercelFailure,
    VercelRemediation,
    api_error,
    unexpected,
)

ENV_ID = "env_id"
REDEPLOY_PENDING = "redeploy_pending"
EnvTarget = Literal["production", "preview", "development"]
# "system" and "secret" are Vercel's own or deprecated; the rest a user may create.
EnvType = Literal["plain", "encrypted", "sensitive"]
FAILED_STATES = frozenset({"ERROR", "CANCELED", "BLOCKED"})
# Pages of variables read at most when looking for ours.
MAX_ENV_PAGES = 50
SETTLED = FAILED_STATES | {"READY"}


class EnvConfig(VercelConfig):
    """Maintenance mode by an environment variable: sets it, redeploys the deployment
    production serves, and reports it on once production serves the rebuilt deployment. When
    the incident resolves the variable is deleted and production redeployed again. After a
    `vercel_rollback`, undo it with `vercel_promote` first, or the rebuild stays staged and
    this fails, taking the variable back. A redeploy is never retried blindly. With
    `remove: true` a run deletes the variable and redeploys instead (maintenance mode off,
    for a procedure), and needs no approval."""

    example: ClassVar[str] = """
        remediations:
          maintenance_mode:
            type: vercel_env
            token: ${VERCEL_TOKEN}
            project_id: my-app
            key: MAINTENANCE_MODE
            value: "true"
            verify_timeout: 10m
        """

    type: Literal["vercel_env"]
    key: str = Field(
        default="MAINTENANCE_MODE",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The variable's name.",
    )
    value: str = Field("true", description="Its value while the incident is open.")
    remove: bool = Field(
        False,
        description="true: a run deletes the variable and redeploys (maintenance mode off: a "
        "procedure's step or undo); `value` is not used and resolve does nothing.",
    )
    # Named env_*: our own `target` and `type` name the lock target and the remediation.
    env_target: list[EnvTarget] = Field(
        default_factory=lambda: list[EnvTarget](["production"]),
        min_length=1,
        description="Vercel's `target` of the variable: the environments it is set in.",
    )
    env_type: EnvType = Field(
        "encrypted",
        description="Vercel's `type` of the variable; `sensitive` cannot target development.",
    )
    # resolve: list, delete, list again, project, redeploy.
    api_calls: ClassVar[int] = 6

    def deadline(self) -> float:
        # Two waits: for the build to settle, then for production to serve it.
        return super().deadline() + self.verify_timeout

    @model_validator(mode="after")
    def _sensitive_not_development(self) -> EnvConfig:
        # Vercel refuses it: sensitive variables exist for production and preview only.
        if self.env_type == "sensitive" and "development" in self.env_target:
            raise ValueError("a sensitive variable cannot target development (Vercel refuses it)")
        return self

    def as_data(self) -> dict[str, Any]:
        """What the timeline says about the variable; never its value."""
        return {"key": self.key, "env_target": list(self.env_target), "env_type": self.env_type}


@REMEDIATIONS.register
class VercelEnv(VercelRemediation):
    """Set a project variable (MAINTENANCE_MODE=true) and redeploy; resolve removes it."""

    type: ClassVar[str] = "vercel_env"
    Config: ClassVar[builtins.type[RemediationConfig]] = EnvConfig
    # Upserting the same variable twice leaves one variable. Misapplied, maintenance mode
    # takes the whole site away from its users: approval first unless the config says not.
    idempotent: bool = True
    destructive: bool = True

    def __init__(self, name: str, config: EnvConfig) -> None:
        self.name = name
        self.config = config
        # Taking maintenance mode off gives the site back: no approval by default.
        self.destructive = not config.remove

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        return await self._run(ctx, self.config, self._unset if self.config.remove else self._set)

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        if self.config.remove:
            return None
        return await self._run(ctx, self.config, self._unset)

    async def _set(self, client: VercelClient) -> RemediationResult:
        config = self.config
        body = {
            "key": config.key,
            "value": config.value,
            "type": config.env_type,
            "target": list(config.env_target),
        }
        path = ("v10", *client.project_path, "env")
        created = await client.call(
            "set variable", "POST", path, query={"upsert": "true"}, body=body
        )
        env_id = _created_id(client, created)
        await client.ctx.state.put(ENV_ID, env_id)
        try:
            result = await self._redeploy(client, f"set {config.key}", {"env_id": env_id})
        except VercelFailure as failure:
            result = failure.result
        return result if result.ok else await self._take_back(client, env_id, result)

    async def _take_back(
        self, client: VercelClient, env_id: str | None, result: RemediationResult
    ) -> RemediationResult:
        """The variable is set but not in effect, and resolve only follows a success: left
        alone, the next deploy would turn maintenance on with nobody to turn it off."""
        undo = await cancel_redeploy(client, result)
        try:
            undo["variable_removed"] = await self._delete(client, env_id) is not None
            await client.ctx.state.put(ENV_ID, None)
        except VercelFailure as failure:
            undo["error"] = failure.result.detail
        result.data["undo"] = undo
        return result

    async def _unset(self, client: VercelClient) -> RemediationResult:
        state = client.ctx.state
        removed = await self._delete(client, await state.get(ENV_ID))
        await state.put(ENV_ID, None)
        # A resolve whose redeploy failed left the variable gone but still in effect.
        if removed is None and not await state.get(REDEPLOY_PENDING):
            data = {"project": self.config.project_id, **self.config.as_data()}
            return RemediationResult(
                True, f"{self.config.key} is not set: nothing to undo", data=data
            )
        await state.put(REDEPLOY_PENDING, True)
        result = await self._redeploy(client, f"removed {self.config.key}", {"env_id": removed})
        if result.ok:
            await state.put(REDEPLOY_PENDING, False)
        return result

    async def _delete(self, client: VercelClient, known: str | None) -> str | None:
        """Delete the variable: by the id execute remembered, else by the one the project
        lists under our key and target. Returns the id deleted, None if there was none."""
        if known is not None and await self._delete_id(client, known):
            return known
        found = await self._find(client)
        if found is not None and await self._delete_id(client, found):
            return found
        return None

    async def _delete_id(self, client: VercelClient, env_id: str) -> bool:
        reply = await client.request("DELETE", ("v9", *client.project_path, "env", env_id))
        if reply.ok:
            return True
        if reply.status == 404:  # deleted by hand meanwhile
            return False
        raise VercelFailure(client.failure("remove variable", reply))

    async def _find(self, client: VercelClient) -> str | None:
        """Our variable's id, following the list's pages."""
        path = ("v10", *client.project_path, "env")
        query: dict[str, str] = {}
        for _ in range(MAX_ENV_PAGES):
            body = await client.call("list variables", "GET", path, query=query)
            envs = body.get("envs") if isinstance(body, dict) else None
            if not isinstance(envs, list):
                raise VercelFailure(unexpected("list variables", "no envs list"))
            found = self._ours(envs)
            following = _next_page(body)
            if found is not None or following is None:
                return found
            query = {"until": following}
        raise VercelFailure(unexpected("list variables", f"more than {MAX_ENV_PAGES} pages"))

    def _ours(self, envs: list[Any]) -> str | None:
        wanted = set(self.config.env_target)
        for env in envs:
            if not isinstance(env, dict) or env.get("key") != self.config.key:
                continue
            env_id = env.get("id")
            if isinstance(env_id, str) and wanted & _targets(env.get("target")):
                return env_id
        return None

    async def _redeploy(
        self, client: VercelClient, action: str, data: dict[str, Any]
    ) -> RemediationResult:
        data = {"project": self.config.project_id, **self.config.as_data(), **data}
        return await redeploy_production(client, action, data)


async def redeploy_production(
    client: VercelClient, action: str, data: dict[str, Any]
) -> RemediationResult:
    """Rebuild the deployment production serves, so the variable change takes effect."""
    project = await client.project()
    if project.production_id is None:
        detail = f"{action}, but the project has no production deployment to redeploy"
        return RemediationResult(False, detail, recoverable=False, data=data)
    body = {"name": project.name, "deploymentId": project.production_id, "target": "production"}
    created = await _create(client, body)
    deployment = Deployment.parse(created)
    if deployment is None:
        raise VercelFailure(unexpected("redeploy", "no deployment id"))
    data["redeploy"] = {"from": project.production_id, **deployment.as_data()}
    try:
        return await _await_ready(client, action, deployment, data)
    except VercelFailure as failure:
        # Keep the build's id with the failure: a pending build may need cancelling.
        failure.result.data["redeploy"] = data["redeploy"]
        raise


async def cancel_redeploy(client: VercelClient, result: RemediationResult) -> dict[str, Any]:
    """Cancel the build a failed redeploy left unsettled, so it never serves; what was done."""
    undo: dict[str, Any] = {}
    redeploy = result.data.get("redeploy")
    if isinstance(redeploy, dict) and result.data.get("ready_state") not in SETTLED:
        path = ("v12", "deployments", str(redeploy["id"]), "cancel")
        reply = await client.request("PATCH", path)
        if reply.ok:
            undo["cancelled"] = redeploy["id"]
        else:
            undo["cancel_error"] = client.failure("cancel redeploy", reply).detail
    return undo


async def _create(client: VercelClient, body: dict[str, Any]) -> Any:
    """POST the build; sent again only after a 429 (after its Retry-After) or a connection
    never made: a request that timed out or got a 5xx may still have started a build."""
    # forceNew: a build of the same source must not be skipped as a duplicate.
    path, query = ("v13", "deployments"), {"forceNew": "1"}
    reply = await client.request("POST", path, query=query, body=body, idempotent=False)
    if reply.ok:
        return reply.body
    result = client.failure("redeploy", reply)
    if not reply.recoverable and (reply.status is None or reply.status >= 500):
        result = RemediationResult(
            False,
            f"{result.detail}; not retried: Vercel may have started the build",
            recoverable=False,
            data=result.data,
        )
    raise VercelFailure(result)


async def _await_ready(
    client: VercelClient, action: str, deployment: Deployment, data: dict[str, Any]
) -> RemediationResult:
    state, substate = deployment.state, deployment.substate

    async def ready() -> bool:
        nonlocal state, substate
        body = await client.call("read deployment", "GET", ("v13", "deployments", deployment.id))
        parsed = Deployment.parse(body)
        state, substate = (parsed.state, parsed.substate) if parsed else ("", None)
        return state in SETTLED

    _, polls = await client.poll(ready)
    data = {**data, "polls": polls, "ready_state": state, "ready_substate": substate}
    if state == "READY":
        return await _served(client, action, deployment, substate, data)
    if state in FAILED_STATES:
        # A failed build fails again from the same source: a person has to look.
        detail = f"{action}, but the redeploy {deployment.id} ended {state}"
        return RemediationResult(False, detail, recoverable=False, data=data)
    timeout = client.config.verify_timeout
    detail = f"{action}, but the redeploy {deployment.id} is {state} after {timeout:g}s"
    return RemediationResult(False, detail, recoverable=True, data=data)


async def _served(
    client: VercelClient,
    action: str,
    deployment: Deployment,
    substate: str | None,
    data: dict[str, Any],
) -> RemediationResult:
    """READY is not live: the change is in effect only once production serves the build."""
    if substate == "STAGED":
        # Production domains are not auto-assigned (after a rollback): it never serves.
        detail = (
            f"{action}, but the redeploy {deployment.id} is staged, not served: production "
            "domains are not assigned automatically (after a rollback, for instance)"
        )
        return RemediationResult(False, detail, recoverable=False, data=data)
    served, polls = await client.poll(lambda: client.serves(deployment.id))
    data = {**data, "serve_polls": polls}
    if served:
        return RemediationResult(True, f"{action}; production serves {deployment.id}", data=data)
    timeout = client.config.verify_timeout
    detail = f"{action}, but production does not serve {deployment.id} after {timeout:g}s"
    return RemediationResult(False, detail, recoverable=True, data=data)


def _next_page(body: object) -> str | None:
    """`pagination.next` of a list, the `until` of the following page; None on the last."""
    pagination = body.get("pagination") if isinstance(body, dict) else None
    following = pagination.get("next") if isinstance(pagination, dict) else None
    return str(following) if isinstance(following, int | str) and following != "" else None


def _targets(value: object) -> set[str]:
    """A variable's `target`: Vercel answers a list, or a single string."""
    if isinstance(value, str):
        return {value}
    return {t for t in value if isinstance(t, str)} if isinstance(value, list) else set()


def _created_id(client: VercelClient, body: object) -> str | None:
    """The new variable's id from {"created": {...} | [...], "failed": [...]}."""
    if not isinstance(body, dict):
        raise VercelFailure(unexpected("set variable", "not an object"))
    failed = body.get("failed")
    if isinstance(failed, list) and failed:
        raise VercelFailure(_refused(client, failed[0]))
    created = body.get("created")
    entry = created[0] if isinstance(created, list) and created else created
    env_id = entry.get("id") if isinstance(entry, dict) else None
    return env_id if isinstance(env_id, str) else None


def _refused(client: VercelClient, failed: object) -> RemediationResult:
    """A 2xx that still lists the variable under "failed" (e.g. it exists, no upsert)."""
    code, message = api_error(failed)
    said = ": ".join(part for part in (code, message) if part) or "no reason given"
    said = excerpt(said, REASON_LIMIT, [client.config.token.get_secret_value()])
    return RemediationResult(False, f"set variable: refused ({said})", recoverable=False)
