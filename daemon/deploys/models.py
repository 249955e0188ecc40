"""What a deploy is and what its watch comes to: the event that announces one, the statuses
a deploy goes through and the kinds of its timeline's entries."""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["standard", "hotfix", "migration"]
KINDS: tuple[Kind, ...] = ("standard", "hotfix", "migration")


class DeployStatus(enum.StrEnum):
    """`WATCHING` and `ROLLING_BACK` go on; every other status is an end."""

    WATCHING = "watching"
    ROLLING_BACK = "rolling_back"  # a breach opened the incident whose plan rolls back
    COMPLETED = "completed"  # a clean watch: the version is the last known good
    ROLLED_BACK = "rolled_back"
    NOT_ROLLED_BACK = "not_rolled_back"  # a breach, and the rollback did not run or failed
    INCONCLUSIVE = "inconclusive"  # data missing at the end of the extended watch: paged
    SUPERSEDED = "superseded"  # another deploy came before its watch ended
    BUILD_FAILED = "build_failed"  # Vercel: the build failed, production did not move
    NOT_WATCHED = "not_watched"  # another environment's


ENDS = frozenset(DeployStatus) - {DeployStatus.WATCHING, DeployStatus.ROLLING_BACK}
# The outcomes counted in `runbookd_deploys_total{outcome}`.
OUTCOMES = tuple(sorted(ENDS))


class DeployStep(enum.StrEnum):
    """The kinds of a deploy's timeline entries."""

    RECEIVED = "received"  # the event, as its source told it
    ANNOUNCED = "announced"  # an announcement was posted (or not: `ok` says)
    BASELINE = "baseline"  # the watched values before the deploy, and their limits
    WATCHING = "watching"
    EXTENDED = "extended"  # the watch went on for lack of data (or a pending condition)
    BREACH = "breach"  # a condition held: the rollback incident opened
    ROLLED_BACK = "rolled_back"
    NOT_ROLLED_BACK = "not_rolled_back"
    CLEARED = "cleared"  # the incident resolved: the values are back within their limits
    COMPLETED = "completed"
    INCONCLUSIVE = "inconclusive"
    SUPERSEDED = "superseded"
    BUILD_FAILED = "build_failed"
    RESUMED = "resumed"  # runbookd restarted during the watch
    NOTE = "note"  # something seen that changes nothing (the version back after a rollback)


SOURCES = ("ci", "vercel", "check")


@dataclass(frozen=True, slots=True)
class DeployEvent:
    """A deploy as a source tells it. `key`: the source's own identity of the event (a
    Vercel delivery id), which makes a replay of it idempotent."""

    version: str
    environment: str
    kind: str = "standard"
    source: str = "ci"
    commit: str | None = None
    by: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    key: str | None = None


def deploy_id(event: DeployEvent, ts: float) -> str:
    """Time-ordered and unique, like an incident's; for an event its source identifies, the
    same for every copy of it, so a replay finds the deploy it made."""
    if event.key is None:
        return f"dep-{int(ts * 1000):x}-{secrets.token_hex(3)}"
    digest = hashlib.sha256(f"{event.source}:{event.key}".encode()).hexdigest()
    return f"dep-{event.source}-{digest[:16]}"
