"""`vercel_secret`: the runbook's Rotate Secrets, for a project's variables on Vercel.

A rotation reads each variable's current value (decrypted: Vercel's "retrieve the decrypted
value" endpoint), generates a new one for each key (base64 of `bytes` random bytes, as
`openssl rand -base64 32` makes), edits the variables in place and redeploys production so
the new values take effect (vercel_env.redeploy_production). When an edit is refused or the
redeploy fails, the values already changed are put back and the result fails. On success the
values replaced are kept in memory only, for a `restore: true` entry of the same keys (the
`undo` of a procedure's step) to put back and redeploy, should a later step fail. They are
never written anywhere: after a restart they are gone, and a restore says so.

No value, old or new, enters a result, a log line or an error: every reply is masked with
them. Sensitive variables cannot be read back, so they cannot be put back: they are refused
before anything changes. Documented endpoints: GET /v10/projects/{idOrName}/env (paged), GET
/v1/projects/{idOrName}/env/{id} (`decrypted`, `value`), PATCH /v9/projects/{idOrName}/env/{id}
with {"type", "value"}, and the redeploy's.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from daemon.core.models import Incident, RemediationResult
from remediations.base import REMEDIATIONS, RemediationConfig, RemediationContext
from remediations.retry import RetryingConfig
from remediations.vercel import (
    VercelClient,
    VercelConfig,
    VercelFailure,
    VercelRemediation,
    unexpected,
)
from remediations.vercel_env import (
    MAX_ENV_PAGES,
    EnvTarget,
    _next_page,
    _targets,
    cancel_redeploy,
    redeploy_production,
)

# Rotations whose old values are kept for a restore: the oldest are forgotten beyond this.
MAX_KEPT = 32
Key = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class SecretConfig(VercelConfig):
    """Rotates secrets kept as project variables: a new random value for each of `keys`
    (base64 of `bytes` random bytes, like `openssl rand -base64 32`), each variable edited in
    place, then production redeployed and watched until it serves the new build. A refused
    edit or a failed redeploy puts the old values back. With `restore: true` it is the undo
    instead: the values the rotation of the same procedure run replaced are put back and
    production redeployed. Old values live in runbookd's memory only, never on disk: after a
    restart a restore cannot put them back and fails, saying so. No value is ever logged,
    recorded or shown. Sensitive variables cannot be read back, hence not restored: refused."""

    example: ClassVar[str] = """
        remediations:
          rotate_secrets:
            type: vercel_secret
            token: ${VERCEL_TOKEN}
            project_id: my-app
            keys: [SESSION_SECRET, JWT_SECRET]
            verify_timeout: 10m
          restore_secrets:
            type: vercel_secret
            token: ${VERCEL_TOKEN}
            project_id: my-app
            keys: [SESSION_SECRET, JWT_SECRET]
            restore: true
            verify_timeout: 10m
        """

    type: Literal["vercel_secret"]
    keys: list[Key] = Field(min_length=1, description="The variables rotated, by name.")
    env_target: list[EnvTarget] = Field(
        default_factory=lambda: list[EnvTarget](["production"]),
        min_length=1,
        description="Which of each key's variables: those set in any of these environments.",
    )
    bytes: int = Field(32, ge=16, le=128, description="Random bytes in each new value.")
    restore: bool = Field(
        False,
        description="true: put back the values this run's rotation replaced, and redeploy "
        "(the `undo` of the rotating step).",
    )

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: list[str]) -> list[str]:
        if len(set(keys)) != len(keys):
            raise ValueError("a key is named twice")
        return keys

    def deadline(self) -> float:
        # Per variable: read its value, edit it, maybe edit it back.
        per_call = RetryingConfig.deadline(self)
        return super().deadline() + 3 * len(self.keys) * per_call + self.verify_timeout

    def as_data(self) -> dict[str, Any]:
        return {"project": self.project_id, "keys": list(self.keys)}


@dataclass(frozen=True, slots=True)
class Variable:
    id: str
    key: str
    type: str
    target: tuple[str, ...]
    value: str  # the value before the rotation: a secret


# (api, team, project, run) -> the variables as they were before that run's rotation.
_kept: OrderedDict[tuple[str, ...], list[Variable]] = OrderedDict()


def new_value(size: int) -> str:
    """Like `openssl rand -base64 SIZE`."""
    return base64.b64encode(secrets.token_bytes(size)).decode()


@REMEDIATIONS.register
class VercelSecret(VercelRemediation):
    type: ClassVar[str] = "vercel_secret"
    Config: ClassVar[builtins.type[RemediationConfig]] = SecretConfig
    # A second rotation replaces the first's values (and what a restore would put back).
    idempotent: bool = False
    destructive: bool = False

    def __init__(self, name: str, config: SecretConfig) -> None:
        self.name = name
        self.config = config
        self.idempotent = config.restore

    def _scope(self, incident: Incident) -> tuple[str, ...]:
        config = self.config
        return (config.api_url, config.team_id or config.slug or "", config.project_id, incident.id)

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        if self.config.restore:
            return await self._run(ctx, self.config, lambda c: self._restore(c, incident))
        return await self._run(ctx, self.config, lambda c: self._rotate(c, incident))

    # -- rotating --------------------------------------------------------------------------------

    async def _rotate(self, client: VercelClient, incident: Incident) -> RemediationResult:
        old = await self._read(client)
        fresh = {key: new_value(self.config.bytes) for key in self.config.keys}
        client.conceal(*fresh.values())
        data = self.config.as_data() | {"variables": [v.id for v in old]}
        changed: list[Variable] = []
        try:
            for variable in old:
                await self._edit(client, variable, fresh[variable.key], "edit variable")
                changed.append(variable)
        except VercelFailure as failure:
            back = await self._put_back(client, changed)
            kept = "kept" if len(back) == len(changed) else "not all put back: see put_back"
            result = failure.result
            detail = f"{result.detail}; the old values are {kept}"
            data = result.data | data | {"put_back": back}
            return dataclasses.replace(result, detail=detail, data=data)
        self._keep(incident, old)
        try:
            result = await redeploy_production(client, f"rotated {self._names()}", data)
        except VercelFailure as failure:
            result = failure.result
        if result.ok:
            return result
        undo = await cancel_redeploy(client, result)
        undo["put_back"] = await self._put_back(client, old)
        if len(undo["put_back"]) == len(old):
            _kept.pop(self._scope(incident), None)
            said = "the old values are back"
        else:
            said = "some old values could not be put back: see undo.put_back"
        detail = f"{result.detail}; {said}"
        return dataclasses.replace(result, detail=detail, data=result.data | {"undo": undo})

    async def _read(self, client: VercelClient) -> list[Variable]:
        """Each key's variables in the targets, with their current values; nothing changes
        unless every one was found and read."""
        found = await self._list(client)
        missing = [key for key in self.config.keys if key not in {env["key"] for env in found}]
        if missing:
            targets = ", ".join(self.config.env_target)
            detail = f"no variable {', '.join(missing)} for {targets}: nothing rotated"
            raise VercelFailure(RemediationResult(False, detail, recoverable=False))
        variables = []
        for env in found:
            path = ("v1", *client.project_path, "env", env["id"])
            body = await client.call(f"read {env['key']}", "GET", path)
            value = body.get("value") if isinstance(body, dict) else None
            if not isinstance(body, dict) or body.get("decrypted") is not True or not value:
                detail = (
                    f"the value of {env['key']} cannot be read back (type "
                    f"{env.get('type')}), so it could not be put back: nothing rotated"
                )
                raise VercelFailure(RemediationResult(False, detail, recoverable=False))
            client.conceal(str(value))
            target = tuple(sorted(_targets(env.get("target"))))
            variables.append(Variable(env["id"], env["key"], str(env["type"]), target, str(value)))
        return variables

    async def _list(self, client: VercelClient) -> list[dict[str, Any]]:
        """The project's variables of our keys in our targets, following the pages."""
        path = ("v10", *client.project_path, "env")
        wanted, found, query = set(self.config.env_target), [], dict[str, str]()
        for _ in range(MAX_ENV_PAGES):
            body = await client.call("list variables", "GET", path, query=query)
            envs = body.get("envs") if isinstance(body, dict) else None
            if not isinstance(envs, list):
                raise VercelFailure(unexpected("list variables", "no envs list"))
            for env in envs:
                if (
                    isinstance(env, dict)
                    and env.get("key") in self.config.keys
                    and isinstance(env.get("id"), str)
                    and wanted & _targets(env.get("target"))
                ):
                    found.append(env)
            following = _next_page(body)
            if following is None:
                return found
            query = {"until": following}
        raise VercelFailure(unexpected("list variables", f"more than {MAX_ENV_PAGES} pages"))

    async def _edit(self, client: VercelClient, variable: Variable, value: str, step: str) -> None:
        path = ("v9", *client.project_path, "env", variable.id)
        body = {"type": variable.type, "value": value}
        reply = await client.request("PATCH", path, body=body)
        if not reply.ok:
            failure = client.failure(f"{step} {variable.key}", reply)
            raise VercelFailure(failure)

    async def _put_back(self, client: VercelClient, variables: list[Variable]) -> list[str]:
        """The old values back, as many as Vercel takes; the ids put back."""
        back = []
        for variable in variables:
            try:
                await self._edit(client, variable, variable.value, "put back")
            except VercelFailure:
                continue
            back.append(variable.id)
        return back

    def _keep(self, incident: Incident, variables: list[Variable]) -> None:
        _kept[self._scope(incident)] = variables
        while len(_kept) > MAX_KEPT:
            _kept.popitem(last=False)

    def _names(self) -> str:
        return ", ".join(self.config.keys)

    # -- restoring -------------------------------------------------------------------------------

    async def _restore(self, client: VercelClient, incident: Incident) -> RemediationResult:
        scope = self._scope(incident)
        kept = [v for v in _kept.get(scope, []) if v.key in self.config.keys]
        data = self.config.as_data()
        if not kept:
            detail = (
                f"no old values of {self._names()} kept for {incident.id} (runbookd restarted "
                "since the rotation, or it rotated nothing): set them by hand"
            )
            return RemediationResult(False, detail, recoverable=False, data=data)
        client.conceal(*(v.value for v in kept))
        back = await self._put_back(client, kept)
        data["put_back"] = back
        if len(back) != len(kept):
            failed = [v.key for v in kept if v.id not in back]
            detail = f"Vercel refused the old values of {', '.join(failed)}: set them by hand"
            return RemediationResult(False, detail, recoverable=True, data=data)
        result = await redeploy_production(client, f"put back {self._names()}", data)
        if result.ok:
            _kept.pop(scope, None)  # a failed redeploy may be run again
        return result
