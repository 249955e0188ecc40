"""The Vercel REST API subset the vercel_* remediations use, as documented at
https://vercel.com/docs/rest-api (paths, versions, query parameters, bodies, statuses).

- GET /v6/deployments?projectId&target&state&limit&since&until&rollbackCandidate: newest
  first, with {"pagination": {"count", "next", "prev"}}; `state` may list several.
- GET /v9/projects/{idOrName}: `targets.production` is the deployment production serves.
- POST /v1/projects/{projectId}/rollback/{deploymentId}?description: 201, no body.
- POST /v10/projects/{projectId}/promote/{deploymentId}: 201, or 202 while queued.
- POST /v13/deployments {"name", "deploymentId", "target"}?forceNew: a rebuild, which
  settles (READY, or `build_outcome`) after `ready_after` reads of GET /v13/deployments/{id}.
- PATCH /v12/deployments/{id}/cancel: a build that has not settled.
- POST /v10/projects/{idOrName}/env?upsert=true, GET /v10/projects/{idOrName}/env (paged),
  DELETE /v9/projects/{idOrName}/env/{id}.
- GET /v1/projects/{idOrName}/env/{id}: one variable with its value decrypted
  (`decrypted: true`), except a sensitive one, whose value is never given back
  (`decrypted: false`, no value). PATCH /v9/projects/{idOrName}/env/{id} with any of
  {"key", "target", "type", "value", "comment"}: the variable edited, answered decrypted.
  Source: https://vercel.com/docs/rest-api/projects/retrieve-the-decrypted-value-of-an-environment-variable-of-a-project-by-id,
  https://vercel.com/docs/rest-api/projects/edit-an-environment-variable,
  https://vercel.com/docs/environment-variables/sensitive-environment-variables

Provider behaviours the fake reproduces, each with where it is documented:

- Rollback candidates: `isRollbackCandidate` marks READY production deployments that have
  served production (a staged build never has); rollback refuses anything else (400); GET
  /v6/deployments filters on `rollbackCandidate=true`.
  Source: https://vercel.com/docs/instant-rollback (eligible deployments),
  https://vercel.com/docs/rest-api/deployments/list-deployments
- After a rollback production domains are no longer auto-assigned: new production builds
  settle READY with `readySubstate: STAGED` and never serve until promoted; a promote turns
  auto-assignment on again.
  Source: https://vercel.com/docs/instant-rollback,
  https://vercel.com/docs/deployments/promoting-a-deployment
- `readySubstate` is STAGED, ROLLING or PROMOTED; `readyState` may be BLOCKED, a final
  state in which the build never runs.
  Source: https://vercel.com/docs/rest-api/deployments/get-a-deployment-by-id-or-url
- Rollback and promote switch aliases asynchronously; the project's `lastAliasRequest`
  ({`jobStatus`: pending, in-progress, succeeded, failed, skipped; `toDeploymentId`,
  `type`, `requestedAt`}) tracks the job, as `vercel rollback status` reads it.
  Source: https://vercel.com/docs/cli/rollback; vercel/vercel
  packages/cli/src/commands/rollback/status.ts
- Promote answers 202 when it is queued behind an active rolling release: production does
  not move until that release completes or is aborted.
  Source: https://vercel.com/docs/rest-api/projects/point-production-traffic-to-a-given-deployment
  (201 and 202), https://vercel.com/docs/rolling-releases
- A missing or invalid token is 403 `forbidden` with `missingToken` / `invalidToken`; a
  team the token does not belong to is 403 too.
  Source: https://vercel.com/docs/rest-api/reference/welcome#errors; the CLI's handling of
  these 403s in vercel/vercel#13443 and #10874
- A `sensitive` variable cannot target `development`: 400.
  Source: https://vercel.com/docs/environment-variables/sensitive-environment-variables
- 429 carries `limit` {`remaining`, `reset` (epoch seconds), `total`} in its error body and
  X-RateLimit-Limit / -Remaining / -Reset headers.
  Source: https://vercel.com/docs/limits#rate-limits
- Lists are paged: `pagination.next` goes back as `until` for the next page.
  Source: https://vercel.com/docs/rest-api/reference/welcome#pagination
- Deployment webhooks: `deployment.created` when a build starts, `deployment.succeeded` or
  `deployment.error` when it settles, `deployment.canceled`, and `deployment.promoted` when
  production's domains are assigned to it (automatically after a production build, or by a
  promote). Each delivery is `{id, type, createdAt (epoch ms), region, payload}`, the payload
  with `team.id`, `user.id`, `deployment` ({id, meta, url, name}), `links` ({deployment,
  project}), `target`, `project.id`, `plan` and `regions`; it is signed in
  `x-vercel-signature` with the hex HMAC-SHA1 of the body under the webhook's secret. The
  fake queues them in `deliveries`; `deliver` POSTs them. A rollback sends none of these.
  Source: https://vercel.com/docs/webhooks, https://vercel.com/docs/webhooks/webhooks-api,
  https://vercel.com/changelog/new-webhook-for-promotion-events

Every route takes `teamId` or `slug`: a project outside the scope asked for is 404. Errors
are {"error": {"code", "message"}}; Vercel documents the statuses but few codes, so other
codes here are this fake's own. Responses carry the bulk real ones do (git metadata,
creators), which puts a list well past one KiB.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes import Failure, retry_after_headers

TOKEN = "vcp_T0kenForTheFakeVercelApi0123456789abcdef"
STATES = ("BUILDING", "ERROR", "INITIALIZING", "QUEUED", "READY", "CANCELED", "BLOCKED")
ENV_TYPES = ("system", "secret", "encrypted", "plain", "sensitive")
ENV_TARGETS = ("production", "preview", "development")
START_MS = 1_790_000_000_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        error = {"code": self.code, "message": self.message, **self.extra}
        return web.json_response({"error": error}, status=self.status, headers=headers)


@dataclass(frozen=True, slots=True)
class Call:
    """One request as Vercel saw it; `body` is parsed JSON, or the raw text, or None."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass(slots=True)
class Env:
    id: str
    key: str
    value: str
    type: str
    target: list[str]
    created: int

    def json(self) -> dict[str, Any]:
        shown = self.value if self.type == "plain" else f"eyJ2IjoiZW5jIn0.{self.id}"
        return {
            "type": self.type,
            "value": shown,
            "target": self.target,
            "configurationId": None,
            "id": self.id,
            "key": self.key,
            "createdAt": self.created,
            "updatedAt": self.created,
            "createdBy": "usr_fake",
            "decrypted": False,
        }


@dataclass(slots=True)
class Deployment:
    id: str
    project_id: str
    name: str
    state: str
    target: str | None
    created: int
    # What the build saw of the project's variables: proves a redeploy picked them up.
    env: dict[str, str] = field(default_factory=dict)
    reads_left: int = 0
    outcome: str = "READY"
    # STAGED (built, never served), PROMOTED (serves or has served), ROLLING.
    substate: str | None = None
    # Has served production: what makes it a rollback candidate.
    served: bool = False

    @property
    def url(self) -> str:
        return f"{self.name}-{self.id[4:13].lower()}-acme.vercel.app"

    def list_json(self) -> dict[str, Any]:
        return {
            "uid": self.id,
            "name": self.name,
            "url": self.url,
            "created": self.created,
            "createdAt": self.created,
            "buildingAt": self.created + 1_000,
            "source": "git",
            "state": self.state,
            "readyState": self.state,
            "readySubstate": self.substate if self.state == "READY" else None,
            "type": "LAMBDAS",
            "target": self.target,
            "creator": {"uid": "usr_fake", "email": "ops@example.com", "username": "ops"},
            "inspectorUrl": f"https://vercel.com/acme/{self.name}/{self.id[4:]}",
            "isRollbackCandidate": self.served,
            "meta": _git_meta(self.id),
        }

    def json(self) -> dict[str, Any]:
        raw = self.list_json()
        del raw["uid"], raw["state"], raw["created"]
        return {"id": self.id, "projectId": self.project_id, "alias": [], **raw}


@dataclass(slots=True)
class Project:
    id: str
    name: str
    team_id: str | None
    production_id: str | None = None
    envs: list[Env] = field(default_factory=list)
    # A rollback or promote under way: (deployment, project reads until it serves).
    switching: tuple[str, int] | None = None
    # Off after a rollback: new production builds are staged, not served.
    auto_assign: bool = True
    # An active rolling release: a promote is queued (202) and production does not move.
    rolling_release: bool = False
    last_alias_request: dict[str, Any] | None = None


def _git_meta(seed: str) -> dict[str, str]:
    return {
        "githubCommitAuthorName": "Ops Engineer",
        "githubCommitMessage": f"Deploy {seed}: update checkout flow and error handling",
        "githubCommitOrg": "acme",
        "githubCommitRef": "main",
        "githubCommitRepo": "storefront",
        "githubCommitSha": (seed * 8)[:40].lower(),
        "githubDeployment": "1",
        "githubOrg": "acme",
        "githubRepo": "storefront",
    }


class FakeVercel:
    """`app` serves the subset; `calls` holds every request, in order."""

    def __init__(
        self,
        token: str = TOKEN,
        *,
        teams: dict[str, str] | None = None,
        switch_after: int = 2,
        ready_after: int = 2,
        now: Callable[[], float] = lambda: START_MS / 1000,
    ) -> None:
        self.token = token
        self.now = now  # wall clock in epoch seconds, for rate-limit resets
        self.teams = dict(teams or {})  # team id -> slug the token may act for
        self.switch_after = switch_after
        self.ready_after = ready_after
        self.build_outcome = "READY"
        self.env_page_size = 100
        self.projects: dict[str, Project] = {}
        self.deployments: dict[str, Deployment] = {}
        self.calls: list[Call] = []
        # Every variable created, deleted ones too: a test names the id a DELETE must carry.
        self.created_envs: list[Env] = []
        # Webhook deliveries not yet sent (`deliver`), oldest first.
        self.deliveries: list[dict[str, Any]] = []
        self._failures: list[tuple[str | None, str | None, Failure]] = []
        self._ids = itertools.count(1)
        self._delivery_ids = itertools.count(1)
        self._clock_ms = START_MS
        self.app = web.Application(middlewares=[self._middleware])
        self._routes()

    # -- set-up and inspection for tests -----------------------------------------------------

    def add_project(self, project_id: str, name: str, team_id: str | None = None) -> Project:
        project = Project(project_id, name, team_id)
        self.projects[project_id] = project
        return project

    def add_deployment(
        self,
        project: Project,
        state: str = "READY",
        target: str | None = "production",
        *,
        staged: bool = False,
    ) -> Deployment:
        """A deployment created after every one before it; READY production ones become
        production, as a git push to the production branch does, unless `staged`."""
        deployment = self._new_deployment(project, state, target)
        self._settled(deployment)
        if state == "READY" and target == "production":
            if staged:
                deployment.substate = "STAGED"
            else:
                self._serve(project, deployment)
        return deployment

    def _serve(self, project: Project, deployment: Deployment, *, promoted: bool = True) -> None:
        project.production_id = deployment.id
        deployment.served, deployment.substate = True, "PROMOTED"
        if promoted:
            self._event("deployment.promoted", deployment)

    # -- webhooks ------------------------------------------------------------------------------

    def _settled(self, deployment: Deployment) -> None:
        kinds = {"READY": "succeeded", "ERROR": "error", "CANCELED": "canceled"}
        if deployment.state in kinds:
            self._event(f"deployment.{kinds[deployment.state]}", deployment)

    def _event(self, kind: str, deployment: Deployment) -> None:
        project = self.projects[deployment.project_id]
        payload: dict[str, Any] = {
            "team": {"id": project.team_id},
            "user": {"id": "usr_fake"},
            "deployment": {
                "id": deployment.id,
                "meta": _git_meta(deployment.id),
                "url": deployment.url,
                "name": deployment.name,
            },
            "links": {
                "deployment": f"https://vercel.com/acme/{deployment.name}/{deployment.id[4:]}",
                "project": f"https://vercel.com/acme/{deployment.name}",
            },
            "target": deployment.target,
            "project": {"id": project.id},
            "plan": "pro",
            "regions": ["iad1"],
        }
        if kind == "deployment.created":
            payload["alias"] = [f"{deployment.name}-acme.vercel.app"]
        delivery = {
            "id": f"evt_{next(self._delivery_ids):04d}{'w' * 16}",
            "type": kind,
            "createdAt": int(self.now() * 1000),
            "region": "iad1",
            "payload": payload,
        }
        self.deliveries.append(delivery)

    async def deliver(
        self, session: aiohttp.ClientSession, url: str, secret: str
    ) -> list[tuple[int, Any]]:
        """POST the queued deliveries to `url`, signed with `secret`: each answer's status and
        JSON body, in order."""
        answers: list[tuple[int, Any]] = []
        while self.deliveries:
            body, headers = signed(self.deliveries.pop(0), secret)
            async with session.post(url, data=body, headers=headers) as response:
                answers.append((response.status, await response.json()))
        return answers

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: float | None = None,
        reset_in: float | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next `count` requests (of that method and path, if given) with
        `status` instead. A 429's wait is `retry_after` (also sent as Retry-After) or
        `reset_in` (only in X-RateLimit-Reset and the body's `limit.reset`, as Vercel does)."""
        for _ in range(count):
            failure = Failure(status, retry_after, reset_in)
            self._failures.append((method, path, failure))

    def requests(self, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path == path]

    # -- plumbing ----------------------------------------------------------------------------

    def _routes(self) -> None:
        add = self.app.router.add_route
        add("GET", "/v6/deployments", self._list_deployments)
        add("GET", "/v13/deployments/{idOrUrl}", self._get_deployment)
        add("POST", "/v13/deployments", self._create_deployment)
        add("PATCH", "/v12/deployments/{id}/cancel", self._cancel_deployment)
        add("GET", "/v9/projects/{idOrName}", self._get_project)
        add("POST", "/v1/projects/{projectId}/rollback/{deploymentId}", self._rollback)
        add("POST", "/v10/projects/{projectId}/promote/{deploymentId}", self._promote)
        add("POST", "/v10/projects/{idOrName}/env", self._create_env)
        add("GET", "/v10/projects/{idOrName}/env", self._list_env)
        add("DELETE", "/v9/projects/{idOrName}/env/{id}", self._delete_env)
        self._one_env_routes()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.text()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        query = dict(request.query)
        self.calls.append(Call(request.method, request.path, query, dict(request.headers), body))
        failure = self._pop_failure(request)
        if failure is not None:
            return _failure(failure, self.now())
        try:
            self._authorize(request)
            return await handler(request)
        except ApiError as error:
            return error.response()

    def _pop_failure(self, request: web.Request) -> Failure | None:
        for index, (method, path, failure) in enumerate(self._failures):
            if method in (None, request.method) and path in (None, request.path):
                del self._failures[index]
                return failure
        return None

    def _authorize(self, request: web.Request) -> None:
        given = request.headers.get("Authorization")
        if given != f"Bearer {self.token}":
            flag = "missingToken" if given is None else "invalidToken"
            raise ApiError(403, "forbidden", "Not authorized", **{flag: True})

    def _scope(self, request: web.Request) -> str | None:
        """The team the request acts for (teamId, else slug), None for a personal account."""
        team_id, slug = request.query.get("teamId"), request.query.get("slug")
        if team_id is not None:
            if team_id not in self.teams:
                raise _forbidden()
            return team_id
        if slug is not None:
            for known, known_slug in self.teams.items():
                if known_slug == slug:
                    return known
            raise _forbidden()
        return None

    def _project(self, request: web.Request, id_or_name: str) -> Project:
        scope = self._scope(request)
        for project in self.projects.values():
            if id_or_name in (project.id, project.name) and project.team_id == scope:
                return project
        raise ApiError(404, "not_found", "Project not found")

    def _deployment(self, request: web.Request, id_or_url: str) -> Deployment:
        scope = self._scope(request)
        for deployment in self.deployments.values():
            owner = self.projects[deployment.project_id].team_id
            if id_or_url in (deployment.id, deployment.url) and owner == scope:
                return deployment
        raise ApiError(404, "not_found", "Deployment not found")

    def _new_deployment(
        self, project: Project, state: str, target: str | None, env: dict[str, str] | None = None
    ) -> Deployment:
        self._clock_ms += 60_000
        ident = f"dpl_{next(self._ids):04d}{'x' * 20}"
        deployment = Deployment(ident, project.id, project.name, state, target, self._clock_ms)
        deployment.env = dict(env or {})
        self.deployments[ident] = deployment
        self._event("deployment.created", deployment)
        return deployment

    # -- deployments -------------------------------------------------------------------------

    async def _list_deployments(self, request: web.Request) -> web.Response:
        query = request.query
        limit = _integer(query.get("limit", "20"), "limit", 1, 100)
        scope = self._scope(request)
        found = [
            d for d in self.deployments.values() if self.projects[d.project_id].team_id == scope
        ]
        if "projectId" in query:
            project = self._project(request, query["projectId"])
            found = [d for d in found if d.project_id == project.id]
        if "target" in query:
            found = [d for d in found if d.target == query["target"]]
        if "state" in query:
            states = _states(query["state"])
            found = [d for d in found if d.state in states]
        if "since" in query:
            since = _integer(query["since"], "since", 0)
            found = [d for d in found if d.created > since]
        if "until" in query:
            until = _integer(query["until"], "until", 0)
            found = [d for d in found if d.created < until]
        if query.get("rollbackCandidate") == "true":
            found = [d for d in found if d.served]
        found.sort(key=lambda d: d.created, reverse=True)
        page, pagination = _page(found, limit, lambda d: d.created)
        deployments = [d.list_json() for d in page]
        return web.json_response({"pagination": pagination, "deployments": deployments})

    async def _get_deployment(self, request: web.Request) -> web.Response:
        deployment = self._deployment(request, request.match_info["idOrUrl"])
        if deployment.reads_left > 0:
            deployment.reads_left -= 1
            if deployment.reads_left == 0:
                self._settle(deployment)
        return web.json_response(deployment.json())

    def _settle(self, deployment: Deployment) -> None:
        deployment.state = deployment.outcome
        self._settled(deployment)
        if deployment.state == "READY" and deployment.target == "production":
            project = self.projects[deployment.project_id]
            if project.auto_assign:
                self._serve(project, deployment)
            else:
                deployment.substate = "STAGED"

    async def _create_deployment(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if request.query.get("forceNew", "0") not in ("0", "1"):
            raise _invalid("`forceNew` must be 0 or 1")
        if not isinstance(body.get("name"), str) or not body["name"]:
            raise _invalid("missing required property `name`")
        target = body.get("target")
        if target not in (None, "production", "staging"):
            raise _invalid("`target` must be production, staging or omitted")
        source = body.get("deploymentId")
        if not isinstance(source, str):
            # Without a deployment to redeploy, files or a git source are required.
            raise _invalid("should have required property `files`")
        project = self.projects[self._deployment(request, source).project_id]
        env_target = target or "preview"
        env = {e.key: e.value for e in project.envs if env_target in e.target}
        deployment = self._new_deployment(project, "BUILDING", target, env)
        deployment.outcome = self.build_outcome
        deployment.reads_left = self.ready_after
        if self.ready_after == 0:
            self._settle(deployment)
        return web.json_response(deployment.json())

    async def _cancel_deployment(self, request: web.Request) -> web.Response:
        deployment = self._deployment(request, request.match_info["id"])
        if deployment.state not in ("BUILDING", "INITIALIZING", "QUEUED"):
            raise _invalid(f"a {deployment.state} deployment cannot be canceled")
        deployment.state, deployment.reads_left = "CANCELED", 0
        self._settled(deployment)
        return web.json_response(deployment.json())

    # -- projects: production ----------------------------------------------------------------

    async def _get_project(self, request: web.Request) -> web.Response:
        project = self._project(request, request.match_info["idOrName"])
        if project.switching is not None:
            deployment_id, reads = project.switching
            project.switching = (deployment_id, reads - 1) if reads > 1 else None
            if reads <= 1:
                self._switched(project, self.deployments[deployment_id])
        return web.json_response(self._project_json(project))

    def _switched(self, project: Project, deployment: Deployment) -> None:
        request = project.last_alias_request or {}
        self._serve(project, deployment, promoted=request.get("type") == "promote")
        if project.last_alias_request is not None:
            project.last_alias_request["jobStatus"] = "succeeded"

    def _project_json(self, project: Project) -> dict[str, Any]:
        mine = [d for d in self.deployments.values() if d.project_id == project.id]
        latest = sorted(mine, key=lambda d: d.created, reverse=True)[:3]
        production = self.deployments.get(project.production_id or "")
        return {
            "id": project.id,
            "name": project.name,
            "accountId": project.team_id or "usr_fake",
            "framework": "nextjs",
            "nodeVersion": "22.x",
            "directoryListing": False,
            "createdAt": START_MS,
            "link": {"type": "github", "org": "acme", "repo": "storefront"},
            "latestDeployments": [d.json() for d in latest],
            "targets": {"production": production.json()} if production else {},
            "lastAliasRequest": project.last_alias_request,
        }

    async def _rollback(self, request: web.Request) -> web.Response:
        project, deployment = self._switch_target(request)
        if not deployment.served:
            raise _invalid("the deployment is not a rollback candidate")
        project.auto_assign = False
        self._switch(project, deployment, "rollback")
        return web.Response(status=201)

    async def _promote(self, request: web.Request) -> web.Response:
        project, deployment = self._switch_target(request)
        if project.rolling_release:
            # Queued behind the active rolling release: nothing moves now.
            return web.Response(status=202)
        project.auto_assign = True
        self._switch(project, deployment, "promote")
        return web.Response(status=201)

    def _switch_target(self, request: web.Request) -> tuple[Project, Deployment]:
        project = self._project(request, request.match_info["projectId"])
        deployment = self._deployment(request, request.match_info["deploymentId"])
        if deployment.project_id != project.id:
            raise ApiError(404, "not_found", "Deployment not found")
        if deployment.state != "READY":
            raise _invalid(f"the deployment is {deployment.state}, not READY")
        current = project.switching[0] if project.switching else project.production_id
        if deployment.id == current:
            message = "Production already serves, or is switching to, this deployment"
            raise ApiError(409, "conflict", message)
        return project, deployment

    def _switch(self, project: Project, deployment: Deployment, kind: str) -> None:
        project.last_alias_request = {
            "fromDeploymentId": project.production_id,
            "toDeploymentId": deployment.id,
            "jobStatus": "in-progress",
            "requestedAt": self._clock_ms,
            "type": kind,
        }
        if self.switch_after == 0:
            self._switched(project, deployment)
        else:
            project.switching = (deployment.id, self.switch_after)

    # -- projects: environment variables -----------------------------------------------------

    async def _create_env(self, request: web.Request) -> web.Response:
        project = self._project(request, request.match_info["idOrName"])
        body = await _json_body(request)
        entries = body if isinstance(body, list) else [body]
        for entry in entries:
            _check_env(entry)
        upsert = request.query.get("upsert") == "true"
        created: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for entry in entries:
            existing = _overlapping(project, entry["key"], entry["target"])
            if existing is not None and not upsert:
                failed.append({"error": _exists(existing)})
                continue
            created.append(self._put_env(project, existing, entry).json())
        first = created[0] if created else {}
        return web.json_response(
            {"created": created if isinstance(body, list) else first, "failed": failed},
            status=201,
        )

    def _put_env(self, project: Project, existing: Env | None, entry: dict[str, Any]) -> Env:
        if existing is not None:
            existing.value, existing.type = entry["value"], entry["type"]
            existing.target = list(entry["target"])
            return existing
        self._clock_ms += 1_000
        env = Env(
            f"env_{next(self._ids):04d}",
            entry["key"],
            entry["value"],
            entry["type"],
            list(entry["target"]),
            self._clock_ms,
        )
        project.envs.append(env)
        self.created_envs.append(env)
        return env

    async def _list_env(self, request: web.Request) -> web.Response:
        project = self._project(request, request.match_info["idOrName"])
        found = sorted(project.envs, key=lambda e: e.created, reverse=True)
        if "until" in request.query:
            until = _integer(request.query["until"], "until", 0)
            found = [e for e in found if e.created < until]
        page, pagination = _page(found, self.env_page_size, lambda e: e.created)
        envs = [env.json() for env in page]
        return web.json_response({"envs": envs, "pagination": pagination})

    async def _delete_env(self, request: web.Request) -> web.Response:
        project = self._project(request, request.match_info["idOrName"])
        for env in project.envs:
            if env.id == request.match_info["id"]:
                project.envs.remove(env)
                return web.json_response(env.json())
        raise ApiError(404, "not_found", "Environment Variable not found")

    # -- projects: one variable, read decrypted and edited (vercel_secret) -------------------

    def _one_env_routes(self) -> None:
        add = self.app.router.add_route
        add("GET", "/v1/projects/{idOrName}/env/{id}", self._get_env_decrypted)
        add("PATCH", "/v9/projects/{idOrName}/env/{id}", self._edit_env)

    def _env_by_id(self, request: web.Request) -> tuple[Project, Env]:
        project = self._project(request, request.match_info["idOrName"])
        for env in project.envs:
            if env.id == request.match_info["id"]:
                return project, env
        raise ApiError(404, "not_found", "Environment Variable not found")

    async def _get_env_decrypted(self, request: web.Request) -> web.Response:
        _, env = self._env_by_id(request)
        return web.json_response(_decrypted(env))

    async def _edit_env(self, request: web.Request) -> web.Response:
        project, env = self._env_by_id(request)
        body = await _json_object(request)
        if unknown := set(body) - {"key", "target", "gitBranch", "type", "value", "comment"}:
            raise _invalid(f"should NOT have additional property `{sorted(unknown)[0]}`")
        edited: dict[str, Any] = {
            "key": env.key,
            "value": env.value,
            "type": env.type,
            "target": env.target,
        }
        edited |= {k: v for k, v in body.items() if k in edited}
        _check_env(edited)
        clash = _overlapping(project, edited["key"], edited["target"])
        if clash is not None and clash is not env:
            error = _exists(clash)
            raise ApiError(400, error["code"], error["message"])
        env.key, env.value, env.type = edited["key"], edited["value"], edited["type"]
        env.target = list(edited["target"])
        self._clock_ms += 1_000
        return web.json_response(_decrypted(env))


def _decrypted(env: Env) -> dict[str, Any]:
    """A variable as the decrypting endpoints answer it: sensitive values never come back."""
    shown = env.json()
    if env.type == "sensitive":
        del shown["value"]
        return shown | {"decrypted": False}
    return shown | {"value": env.value, "decrypted": True}


def signed(delivery: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    """A delivery as Vercel sends it: the JSON body, and its hex HMAC-SHA1 under the secret."""
    body = json.dumps(delivery).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return body, {"Content-Type": "application/json", "x-vercel-signature": signature}


def _page(
    found: list[Any], limit: int, stamp: Callable[[Any], int]
) -> tuple[list[Any], dict[str, Any]]:
    """A page of `found` (newest first) and its pagination: `next` goes back as `until`."""
    page = found[:limit]
    pagination = {
        "count": len(page),
        "next": stamp(page[-1]) if len(found) > limit else None,
        "prev": stamp(page[0]) if page else None,
    }
    return page, pagination


def _failure(failure: Failure, now: float) -> web.Response:
    if failure.status == 429:
        wait = failure.retry_after or failure.reset_in or 60.0
        reset = math.ceil(now + wait)
        limit = {"remaining": 0, "reset": reset, "total": 100}
        error = ApiError(429, "rate_limited", "Rate limit exceeded", limit=limit)
        headers = {
            **retry_after_headers(failure),
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
        }
        return error.response(headers)
    elif failure.status >= 500:
        error = ApiError(failure.status, "internal_server_error", "An unexpected error occurred")
    else:
        error = ApiError(failure.status, "injected", f"injected HTTP {failure.status}")
    return error.response(retry_after_headers(failure))


def _forbidden() -> ApiError:
    return ApiError(403, "forbidden", "You don't have permission to access this resource.")


def _invalid(why: str) -> ApiError:
    return ApiError(400, "bad_request", f"Invalid request: {why}.")


def _integer(value: str, name: str, low: int, high: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _invalid(f"`{name}` should be a number") from None
    if number < low or (high is not None and number > high):
        raise _invalid(f"`{name}` is out of range")
    return number


def _states(value: str) -> set[str]:
    states = {s.strip() for s in value.split(",")}
    if not states <= set(STATES):
        raise _invalid("`state` should be one of " + ", ".join(STATES))
    return states


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.text())
    except ValueError:
        raise _invalid("the body is not valid JSON") from None


async def _json_object(request: web.Request) -> dict[str, Any]:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise _invalid("the body should be an object")
    return body


def _check_env(entry: object) -> None:
    if not isinstance(entry, dict):
        raise _invalid("each variable should be an object")
    for name in ("key", "value", "type"):
        if not isinstance(entry.get(name), str) or not entry[name]:
            raise _invalid(f"missing required property `{name}`")
    if entry["type"] not in ENV_TYPES:
        raise _invalid("`type` should be one of " + ", ".join(ENV_TYPES))
    target = entry.get("target")
    if not isinstance(target, list) or not target or not set(target) <= set(ENV_TARGETS):
        raise _invalid("`target` should be a list of production, preview, development")
    if entry["type"] == "sensitive" and "development" in target:
        raise _invalid("a sensitive variable cannot target development")


def _overlapping(project: Project, key: str, target: list[str]) -> Env | None:
    for env in project.envs:
        if env.key == key and set(env.target) & set(target):
            return env
    return None


def _exists(env: Env) -> dict[str, Any]:
    message = f"A variable with the name `{env.key}` already exists for the target(s) given."
    return {"code": "ENV_ALREADY_EXISTS", "message": message, "key": env.key, "envVarId": env.id}


def seed_storefront(fake: FakeVercel, team_id: str | None) -> dict[str, Deployment]:
    """Project prj_store ("storefront"), oldest first: a READY production deployment, a
    failed one, a preview, the READY one production serves, and a build still running."""
    project = fake.add_project("prj_store", "storefront", team_id)
    return {
        "previous": fake.add_deployment(project),
        "failed": fake.add_deployment(project, "ERROR"),
        "preview": fake.add_deployment(project, target=None),
        "current": fake.add_deployment(project),
        "building": fake.add_deployment(project, "BUILDING"),
    }


# --- the storefront as the vercel_* remediation tests see it -----------------------------------

TEAM = "team_acme0123456789"


def config(api_url: str, kind: str, **overrides: Any) -> dict[str, Any]:
    """A vercel_* remediation's config for the storefront, in TEAM, with TOKEN."""
    base = {
        "type": kind,
        "token": TOKEN,
        "project_id": "prj_store",
        "team_id": TEAM,
        "api_url": api_url,
    }
    return {**base, **overrides}


def production(fake: FakeVercel) -> str | None:
    """The deployment the storefront's production domains serve."""
    return fake.projects["prj_store"].production_id
