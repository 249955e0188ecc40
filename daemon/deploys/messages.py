"""What the announcements say: the runbook's deployment messages, with the values behind
them as facts."""

from __future__ import annotations

from datetime import UTC, datetime

from daemon.core.units import format_duration
from daemon.store.protocol import Deploy
from remediations.base import Announcement


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _who(deploy: Deploy) -> list[tuple[str, str]]:
    facts = [("Kind", deploy.kind)]
    if deploy.commit:
        facts.append(("Commit", deploy.commit))
    if deploy.by:
        facts.append(("By", deploy.by))
    facts.append(("Previous", deploy.previous or "unknown"))
    return facts


def starting(deploy: Deploy, watch_for: float, baseline: str) -> Announcement:
    text = (
        f"Starting deployment of {deploy.version} to {deploy.environment} "
        f"at {utc(deploy.started_at)}"
    )
    facts = [*_who(deploy), ("Watching", format_duration(watch_for))]
    if baseline:
        facts.append(("Before", baseline))
    return Announcement(text, tuple(facts))


def completed(deploy: Deploy, watched: float, values: str) -> Announcement:
    facts = [("Watched", format_duration(round(watched)))]
    if values:
        facts.append(("Now", values))
    return Announcement(f"✅ Deployment of {deploy.version} completed", tuple(facts))


def rolled_back(deploy: Deploy, reasons: str, detail: str) -> Announcement:
    if deploy.previous:
        text = f"Rolled back to {deploy.previous} due to {reasons}"
    else:  # no watch ended clean before it: what production went back to is the remediation's
        text = f"Rolled back {deploy.version} to the previous deployment due to {reasons}"
    facts = (("Deploy", deploy.version), ("Rollback", detail))
    return Announcement(text, facts)


def not_rolled_back(deploy: Deploy, reasons: str, why: str) -> Announcement:
    text = f"⚠️ Deployment of {deploy.version} broke: {reasons}; it was not rolled back: {why}"
    return Announcement(text, (("Deploy", deploy.version),))


def unverified(deploy: Deploy, missing: str) -> Announcement:
    text = f"⚠️ Deployment of {deploy.version} could not be verified: {missing}"
    return Announcement(text, (("Deploy", deploy.version),))


def build_failed(deploy: Deploy) -> Announcement:
    text = (
        f"❌ Deployment of {deploy.version} to {deploy.environment} failed to build; "
        "production did not change"
    )
    return Announcement(text, tuple(_who(deploy)))
