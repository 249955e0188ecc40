"""Vercel's deployment webhooks, as documented (https://vercel.com/docs/webhooks and
https://vercel.com/docs/webhooks/webhooks-api): a JSON body `{id, type, createdAt, region,
payload}` where `id` identifies the delivery and `createdAt` is in epoch milliseconds, signed
in `x-vercel-signature` with the hex HMAC-SHA1 of the raw body under the webhook's secret.
Deployment events carry `payload.deployment` ({id, url, name, meta}), `payload.target`
(`production`, `staging` or null), `payload.project.id` and `payload.links.deployment`.

Which event starts the watch: `deployment.promoted` for the watched target. A promotion is
the moment production's domains move to the deployment: automatically after a production
build (Vercel's default) or by hand. `deployment.succeeded` only says the build is ready, and
a production build may be staged and never serve (after a rollback Vercel stops assigning
production domains until a promote): watching from it would judge traffic the build never
took, and record a version that never served as last known good. `deployment.error` records
a failed build (production did not move); `deployment.created` and `deployment.succeeded`
change nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from daemon.deploys.models import DeployEvent

SIGNATURE_HEADER = "x-vercel-signature"
PROMOTED = "deployment.promoted"
ERROR = "deployment.error"
_HEX_SHA1 = re.compile(r"^[0-9a-fA-F]{40}$")
# The commit a deployment was built from, whichever git provider it came from.
_COMMIT_KEYS = ("githubCommitSha", "gitlabCommitSha", "bitbucketCommitSha")
_AUTHOR_KEYS = ("githubCommitAuthorName", "gitlabCommitAuthorName", "bitbucketCommitAuthorName")


class _Open(BaseModel):
    # Vercel adds fields over time: those not read here are ignored, not refused.
    model_config = ConfigDict(extra="ignore", frozen=True)


class VercelDeployment(_Open):
    id: str = Field(min_length=1, max_length=200)
    url: str | None = Field(None, max_length=2000)
    name: str | None = Field(None, max_length=200)
    meta: dict[str, JsonValue] = Field(default_factory=dict)


class VercelRef(_Open):
    id: str | None = Field(None, max_length=200)


class VercelLinks(_Open):
    deployment: str | None = Field(None, max_length=2000)
    project: str | None = Field(None, max_length=2000)


class VercelPayload(_Open):
    deployment: VercelDeployment | None = None
    target: str | None = Field(None, max_length=64)
    project: VercelRef | None = None
    team: VercelRef | None = None
    user: VercelRef | None = None
    links: VercelLinks | None = None


class VercelDelivery(_Open):
    """One webhook delivery."""

    id: str = Field(min_length=1, max_length=200, description="The delivery's id.")
    type: str = Field(min_length=1, max_length=200, description="The event type.")
    createdAt: float = Field(ge=0, description="When the event was generated (epoch ms).")
    region: str | None = None
    payload: VercelPayload

    @property
    def created_at(self) -> float:
        return self.createdAt / 1000


def sign(secret: str, body: bytes) -> str:
    """What Vercel sends in `x-vercel-signature`: the hex HMAC-SHA1 of the raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def signature_problem(secret: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """Why the delivery is not signed with `secret`, or None. Over the raw bytes, compared in
    constant time."""
    given = headers.get(SIGNATURE_HEADER)
    if given is None:
        return f"missing {SIGNATURE_HEADER} header"
    expected = sign(secret, body)
    if _HEX_SHA1.match(given) is None or not hmac.compare_digest(given.lower(), expected):
        return (
            f"{SIGNATURE_HEADER}: bad signature (expected the hex HMAC-SHA1 of the body with "
            "deploys.vercel.webhook_secret)"
        )
    return None


def _text(meta: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((v for k in keys if isinstance(v := meta.get(k), str) and v), None)


def deploy_event(delivery: VercelDelivery, deployment: VercelDeployment) -> DeployEvent:
    """The deploy a deployment event tells of: its version is the deployment's id (what a
    rollback goes back to), its environment Vercel's target (`preview` when it has none)."""
    payload, meta = delivery.payload, deployment.meta
    data: dict[str, Any] = {
        "event": delivery.type,
        "delivery": delivery.id,
        "created_at": delivery.created_at,
        "deployment": {"id": deployment.id, "url": deployment.url, "name": deployment.name},
        "project": payload.project.id if payload.project else None,
    }
    if payload.links is not None and payload.links.deployment:
        data["link"] = payload.links.deployment
    if isinstance(message := meta.get("githubCommitMessage"), str):
        data["commit_message"] = message[:500]
    user = payload.user.id if payload.user else None
    return DeployEvent(
        version=deployment.id,
        environment=payload.target or "preview",
        source="vercel",
        commit=_text(meta, _COMMIT_KEYS),
        by=_text(meta, _AUTHOR_KEYS) or user,
        data=data,
        key=delivery.id,
    )
