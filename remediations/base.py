"""The contract every remediation type fulfils."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import aiohttp
from pydantic import Field

from daemon.core.clock import Clock
from daemon.core.models import Incident, RemediationResult
from daemon.core.registry import Registry
from daemon.core.units import Duration, PositiveDuration, SecretsModel, StrictModel


class RunLimit(StrictModel):
    """At most `count` runs per sliding `window`, whichever rule asks (e.g. restarts):
    beyond, the step is refused and the plan escalates, so a restart loop stops by itself."""

    count: int = Field(ge=1, description="Runs allowed in the window.")
    window: PositiveDuration = Field(description="The sliding window counted.")


class RemediationConfig(SecretsModel):
    """Fields every remediation has. Subclasses narrow `type` to a Literal and give an
    `example` (a config text naming one remediation of the type; see CheckConfig)."""

    example: ClassVar[str] = ""

    type: str = Field(description="The remediation's type: one of the sections below.")
    cooldown: Duration = Field(
        300.0,
        description="No second run of this remediation for the same rule within this long "
        "(the step is held back and the plan escalates); 0s: none. Notifiers have none.",
    )
    timeout: PositiveDuration = Field(
        30.0,
        description="How long one call may take: for HTTP types one attempt (retries come on "
        "top), for tool types each command. A run past its whole bound is cancelled and "
        "fails.",
    )
    target: str | None = Field(
        None,
        description="What it acts on (a service, a project): two plans never act on one "
        "target at once. Default: the remediation's name.",
    )
    max_runs: RunLimit | None = Field(
        None, description="At most this many runs per window, whichever rule asks."
    )
    require_approval: bool | None = Field(
        None,
        description="true: every run waits for an operator's approval; false: never. Unset: "
        "destructive types wait, others do not.",
    )
    approval_timeout: PositiveDuration = Field(
        900.0,
        description="An approval unanswered this long holds the step back (not run) and the "
        "plan escalates; a rejection ends the plan.",
    )

    def deadline(self) -> float:
        """The longest one execution may take, retries included: the pipeline's outer bound."""
        return self.timeout


class StateStore(Protocol):
    """Small JSON values a remediation keeps across runs and restarts (e.g. the last image
    seen healthy). Each remediation sees its own keys."""

    async def get(self, key: str) -> Any: ...

    async def put(self, key: str, value: Any) -> None: ...


class MemoryState:
    """A StateStore in memory: for tests, and the default outside the daemon."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def get(self, key: str) -> Any:
        return self.values.get(key)

    async def put(self, key: str, value: Any) -> None:
        self.values[key] = value


@dataclass(slots=True)
class RemediationContext:
    session: aiohttp.ClientSession
    clock: Clock
    state: StateStore = field(default_factory=MemoryState)


class Remediation(Protocol):
    type: ClassVar[str]
    Config: ClassVar[builtins.type[RemediationConfig]]
    # Safe to run twice with the same effect (a crash mid-run may be retried). Plain
    # attributes, not ClassVars, so an instance may follow its config.
    idempotent: bool
    # Loses data or capacity if misapplied; needs approval (see the safety envelope).
    destructive: bool
    # Tells people rather than changes systems: exempt from the action budget.
    notifier: bool

    def __init__(self, name: str, config: Any) -> None: ...

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult: ...

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        """Called once when the incident resolves (a page resolves); None: nothing to do.
        It may wait on ctx.clock (scale back in after a quiet period): the pipeline cancels
        it if the same rule fires again meanwhile."""
        ...

    async def healthy(self, ctx: RemediationContext) -> None:
        """Called now and then while a rule that uses it is healthy, to note what a good
        state looks like (the image running, the deployment serving)."""
        ...


@dataclass(frozen=True, slots=True)
class Announcement:
    """A message for people about something other than an incident: a deploy starting,
    completing, rolled back. `text` is one line; `facts` are (label, value) pairs shown
    beside it."""

    text: str
    facts: tuple[tuple[str, str], ...] = ()


class Announcer(Protocol):
    """A notifier that can also post an `Announcement` (a `slack` remediation posts it to its
    channel). Optional: a remediation without `announce` cannot be named where announcements
    go (`deploys.announce`)."""

    async def announce(
        self, ctx: RemediationContext, message: Announcement
    ) -> RemediationResult: ...


def can_announce(remediation: object) -> bool:
    return callable(getattr(remediation, "announce", None))


class Updater(Protocol):
    """A notifier that tells an open incident's progress where it announced it, every
    `update_every` seconds (a `slack` remediation posts in the incident's thread). Optional:
    the update loop (daemon/pipeline/updates.py) calls `update` only for an incident this
    remediation announced, through the outbox."""

    update_every: float

    async def update(self, ctx: RemediationContext, incident: Incident) -> RemediationResult: ...


def update_interval(remediation: object) -> float | None:
    """How often `remediation` updates the incidents it announced; None: it does not."""
    every = getattr(remediation, "update_every", None)
    if not callable(getattr(remediation, "update", None)) or not isinstance(every, int | float):
        return None
    return float(every)


class Hooks:
    """Default hooks for remediations with nothing to do on resolve or while healthy."""

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        return None

    async def healthy(self, ctx: RemediationContext) -> None:
        return None


def run_params(incident: Incident) -> dict[str, str]:
    """The parameters of the procedure run a remediation acts for (none for an incident)."""
    params = incident.trigger.get("params")
    return {str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {}


def incident_fields(incident: Incident) -> dict[str, Any]:
    """The incident facts a template may insert, as plain data (never evaluated); for a
    procedure's run, its parameters too (`params.NAME`)."""
    trigger = incident.trigger
    params = {f"{PARAMS}{k}": v for k, v in run_params(incident).items()}
    return params | {
        "incident.id": incident.id,
        "incident.rule": incident.rule,
        "incident.check": incident.check,
        "incident.severity": incident.severity,
        "incident.summary": incident.summary,
        "incident.status": incident.status.value,
        "incident.opened_at": incident.opened_at,
        "incident.value": trigger.get("value"),
        "incident.threshold": trigger.get("threshold"),
    }


# The `notifier` option of the types that may either act or only tell people (command, http).
NOTIFIER_FIELD: Any = Field(
    False,
    description="Declares that it only tells people (a page, a chat message): like the "
    "`pagerduty` and `slack` types, it then goes through the paging outbox (retried until "
    "delivered), is exempt from the cooldown, the budget, the target lock and the circuit "
    "breaker, so every incident is told, and may be used in `on_blind`. Leave false for "
    "anything that changes the application.",
)

# The prefix of a procedure's parameters among a template's fields.
PARAMS = "params."

REMEDIATIONS: Registry[type[Remediation]] = Registry("remediation")
