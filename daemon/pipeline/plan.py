"""What the pipeline works with: the remediations at hand (`Plan`), one incident's plan under
way (`Run`), and what a step came to (`StepOutcome`)."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field

from daemon.core.models import Incident
from daemon.pipeline.progress import Progress
from daemon.pipeline.safety import Budget
from daemon.rules.config import RuleConfig
from remediations.base import Remediation, RemediationConfig


@dataclass(slots=True)
class Plan:
    """What the pipeline has at hand for the remediations named in the config."""

    remediations: dict[str, Remediation]
    configs: dict[str, RemediationConfig]
    dry_run: bool = False
    budget: Budget = field(default_factory=Budget)
    breaker_after: int = 3

    def notifiers(self) -> frozenset[str]:
        return frozenset(n for n, r in self.remediations.items() if r.notifier)


@dataclass(slots=True)
class Run:
    incident: Incident
    rule: RuleConfig
    progress: Progress
    cleared: asyncio.Event = field(default_factory=asyncio.Event)
    saved: bool = False  # the progress is in the store


class StepOutcome(enum.Enum):
    """What a step (or a stage's steps) came to; the plan runner decides what follows."""

    DONE = "done"  # ran, or was let through without acting (a dry run, a page held back)
    HELD = "held"  # a fix held back (cooldown, budget, lock, approval timeout): people needed
    FAILED = "failed"  # did not succeed: `do:` stops and `escalate:` runs
    REJECTED = "rejected"  # an operator said no: the plan ends, they have taken over
    RESOLVED = "resolved"  # the incident resolved under way: what is left does not run


# A step's outcome ends the stage's steps there.
STOPS = frozenset({StepOutcome.FAILED, StepOutcome.REJECTED, StepOutcome.RESOLVED})


class Stopped(Exception):
    """The daemon is stopping: no new action starts; the plan resumes after the restart."""
