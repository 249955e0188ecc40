"""The open incidents, one per rule: opening one (its timeline's first entry, then the
pipeline starts its remediation), resolving one (store, timeline and the pipeline's notices in
one transaction), and taking back those a previous run left open.

The rules decide when; this part decides what opening and resolving write, and in which order.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Protocol

import structlog

from daemon.core.models import Incident, IncidentStatus, Step
from daemon.engine.timeline import Recorder
from daemon.pipeline.fence import Fence, Unfenced
from daemon.rules.config import RuleConfig
from daemon.runtime.metrics import Metrics
from daemon.store.protocol import Fenced, Store

log = structlog.get_logger("runbookd.engine")


class Actions(Protocol):
    """What the engine tells the pipeline (daemon/pipeline)."""

    def start(self, incident: Incident, rule: RuleConfig) -> None: ...

    async def resolved(self, incident: Incident) -> None: ...

    def healthy(self, rule: RuleConfig) -> None: ...


def new_incident_id(ms: int, rule: str) -> str:
    """Time-ordered, and derived from the rule and the episode's start (in ms) alone: it
    doubles as the PagerDuty dedup_key, so the same episode paged again (after a failover) is
    one page."""
    digest = hashlib.sha256(rule.encode()).hexdigest()[:6]
    return f"inc-{ms:x}-{digest}"


def _start_of(incident_id: str) -> int:
    """The start in ms an incident id carries ("inc-<hex ms>-..."); -1 if it carries none."""
    try:
        return int(incident_id.split("-")[1], 16)
    except (IndexError, ValueError):
        return -1


class OpenIncidents:
    """The incident open for each rule (`by_rule`), keyed by the rule's name, or by
    `RULE:blind` and `RULE:alert_cap` for those the engine raises about a rule."""

    def __init__(
        self,
        *,
        store: Store,
        recorder: Recorder,
        actions: Actions,
        metrics: Metrics,
        fence: Fence | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.actions = actions
        self.metrics = metrics
        # A replica that no longer leads (paused past its lease, its engine fed before it
        # learns so) neither opens nor resolves: the leader's incidents are the store's.
        self.fence: Fence = fence or Unfenced()
        self.by_rule: dict[str, Incident] = {}
        # Rules whose incident is being written: set when the write is over. A resolution
        # that comes meanwhile (a check observed while a slow store commits the opening)
        # waits for it, or it would resolve an incident the store does not have yet.
        self._opening: dict[str, asyncio.Event] = {}
        # Each rule's last episode start, in ms: an episode that starts in the millisecond the
        # last one ended (a resolved and a firing alert in one request) takes the next one.
        self._last_start: dict[str, int] = {}

    async def _start_ms(self, rule: str, ts: float) -> int:
        if rule not in self._last_start:  # since a restart: the store's newest says
            newest = await self.store.list_incidents(rule=rule, limit=1)
            self._last_start[rule] = _start_of(newest[0].id) if newest else -1
        ms = max(int(ts * 1000), self._last_start[rule] + 1)
        self._last_start[rule] = ms
        return ms

    def rule_of(self, incident_id: str) -> str | None:
        """The key of the open incident `incident_id`, if it is open."""
        return next((r for r, i in self.by_rule.items() if i.id == incident_id), None)

    async def restore(self) -> list[Incident]:
        """Take back the incidents a previous run left open; returns them."""
        restored = await self.store.open_incidents()
        for incident in restored:
            self.by_rule[incident.rule] = incident
        self.metrics.incidents_open.set(len(self.by_rule))
        return restored

    async def announce_restored(self) -> None:
        for incident in list(self.by_rule.values()):
            await self.recorder.record(
                incident, Step.RESTORED, "daemon restarted; incident still open, rule firing"
            )

    async def open(
        self,
        rule: str,
        config: RuleConfig,
        check: str,
        summary: str,
        message: str,
        trigger: dict[str, Any],
        ts: float,
    ) -> None:
        incident = Incident(
            id=new_incident_id(await self._start_ms(rule, ts), rule),
            rule=rule,
            check=check,
            severity=config.severity,
            summary=summary,
            opened_at=ts,
            trigger=trigger,
        )
        self.by_rule[rule] = incident
        self._opening[rule] = written = asyncio.Event()
        try:
            async with self.recorder.batch():
                await self.fence.check()
                await self.recorder.open(incident, message, **trigger)
        except BaseException as exc:  # not stored, so not open
            if self.by_rule.get(rule) is incident:
                del self.by_rule[rule]
            if not isinstance(exc, Fenced):
                raise
            log.warning("not opened: this replica does not lead", rule=rule, incident=incident.id)
            return
        finally:
            written.set()
            if self._opening.get(rule) is written:
                del self._opening[rule]

        def opened() -> None:
            self.metrics.incidents_open.set(len(self.by_rule))
            self.metrics.incidents_opened.labels(rule).inc()
            self.actions.start(incident, config)

        def not_opened() -> None:  # the enclosing batch was not committed
            if self.by_rule.get(rule) is incident:
                del self.by_rule[rule]

        # Inside a caller's batch (a request of alerts), its plan starts once that commits.
        self.recorder.once_committed(opened, not_opened)

    async def resolve(
        self, rule: str, ts: float, message: str, data: dict[str, Any], *, by: str | None = None
    ) -> None:
        """`by`: the operator who closed it by hand (None: it cleared)."""
        if (opening := self._opening.get(rule)) is not None:
            await opening.wait()
        incident = self.by_rule.pop(rule, None)
        if incident is None:
            return
        incident.status = IncidentStatus.RESOLVED
        incident.resolved_at, incident.resolved_by = ts, by

        def reopen() -> None:  # as the store still has it
            incident.status = IncidentStatus.OPEN
            incident.resolved_at = incident.resolved_by = None
            self.by_rule.setdefault(rule, incident)

        # One transaction: the resolution and the notices it owes (the pages' resolutions,
        # queued in the outbox) survive a crash together, or not at all.
        try:
            async with self.recorder.batch():
                try:
                    await self.fence.check()
                except Fenced:
                    reopen()
                    log.warning("not resolved: this replica does not lead", incident=incident.id)
                    return
                await self.store.resolve_incident(incident.id, ts, by=by)
                await self.recorder.record(incident, Step.RESOLVED, message, **data)
                await self.actions.resolved(incident)
        except BaseException:
            reopen()  # not committed: still open, and a retry of the request resolves it
            raise
        self.metrics.incidents_open.set(len(self.by_rule))
