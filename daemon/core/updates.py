"""An open incident's updates (the runbook's "post updates every 30 minutes"): each is an
`update` entry on the incident's timeline, saying at which stage the incident is and whom it
was told (the public status page, the channels that announced the incident). The timeline is
the record, so when each was last told, and so when the next update is due, survives a
restart and a failover. Read by the update loop (daemon/pipeline/updates.py), the status page
and the notifiers' `update` hook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.core.models import Incident, Step, TimelineEntry

# The runbook's Incident Update: what its Status and Current status say at each stage, in
# words fit for the public (nothing of the checks, values or actions themselves).
STAGES = {
    "investigating": "We are looking into it.",
    "identified": "The team is working on it.",
    "monitoring": "A fix is in place and we are watching it.",
    "resolved": "This incident is resolved.",
}


# The key an `action` entry of a notifier (a page, a chat message) carries: it tells people,
# and says nothing of anyone working on the incident.
NOTIFIER = "notifier"


def stage(incident: Incident) -> str:
    """investigating (nobody and nothing on it yet), identified (acknowledged, or a fix ran or
    was approved), monitoring (a verification after the last fix), resolved."""
    if not incident.is_open:
        return "resolved"
    kinds = [
        None if e.kind == Step.ACTION and e.data.get(NOTIFIER) is True else e.kind
        for e in incident.timeline
    ]
    last_action = max((i for i, k in enumerate(kinds) if k == Step.ACTION), default=-1)
    if any(k in (Step.VERIFY, Step.VERIFIED) for k in kinds[last_action + 1 :]):
        return "monitoring"
    acted = last_action >= 0 or Step.APPROVED in kinds
    return "identified" if incident.acknowledged_by or acted else "investigating"


@dataclass(frozen=True, slots=True)
class UpdateFacts:
    """What an `update` entry says: the stage, whether the status page showed it, and the
    remediations (channels) told. Written and read only through this class."""

    stage: str
    public: bool = False
    told: tuple[str, ...] = ()

    def data(self) -> dict[str, Any]:
        return {"stage": self.stage, "public": self.public, "told": list(self.told)}

    @classmethod
    def read(cls, entry: TimelineEntry) -> UpdateFacts | None:
        if entry.kind != Step.UPDATE:
            return None
        data = entry.data
        stage_, public, told = data.get("stage"), data.get("public"), data.get("told")
        if stage_ not in STAGES:
            return None
        names = tuple(t for t in told if isinstance(t, str)) if isinstance(told, list) else ()
        return cls(stage_, public is True, names)


@dataclass(frozen=True, slots=True)
class Posted:
    """One update, as the timeline has it."""

    ts: float
    facts: UpdateFacts


def updates(incident: Incident) -> list[Posted]:
    """The incident's updates, oldest first."""
    return [
        Posted(entry.ts, facts)
        for entry in incident.timeline
        if (facts := UpdateFacts.read(entry)) is not None
    ]


def last_public(incident: Incident) -> float:
    """When the public was last told: its last public update, else the opening (the status
    page shows an incident from the moment it opens)."""
    return max([incident.opened_at, *(p.ts for p in updates(incident) if p.facts.public)])


def last_told(incident: Incident, remediation: str) -> float | None:
    """When the channel `remediation` last told about the incident: its announcement (a
    successful run in the plan) or its last update; None if it never announced it."""
    announced = [e.ts for e in incident.timeline if e.succeeded(remediation)]
    if not announced:
        return None
    told = [p.ts for p in updates(incident) if remediation in p.facts.told]
    return max([*announced, *told])
