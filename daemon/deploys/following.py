"""Following the rollback incident: its plan's entries tell whether the rollback ran (the
deploy ends rolled back, announced) or not (not rolled back, announced); its resolution
clears the deploy.
"""

from __future__ import annotations

from daemon.core.models import Incident, Step, TimelineEntry
from daemon.deploys import messages
from daemon.deploys.config import DeploysConfig
from daemon.deploys.models import DeployStatus, DeployStep
from daemon.deploys.state import WatcherState
from daemon.store.protocol import Deploy

# Plan entries that mean the rollback will not run (the plan's gates, or a crash in it).
STOPPED = frozenset({Step.SILENCED, Step.CIRCUIT_OPEN, Step.ERROR})
NOT_RUN = frozenset({Step.SKIPPED, Step.DRY_RUN, Step.REJECTED, Step.INTERRUPTED})


class Following(WatcherState):
    async def _follow(self, incident: Incident, entry: TimelineEntry) -> None:
        config = self.config
        if config is None:
            return
        async with self._lock:
            owner = self.owner
            if owner is None or owner.deploy.incident != incident.id:
                return
            deploy, facts = owner.deploy, entry.step
            if (
                entry.kind == Step.ACTION
                and facts is not None
                and facts.remediation == config.rollback
            ):
                owner.acting = True
            outcome = _outcome(entry, config.rollback, acting=owner.acting)
            if outcome is not None and deploy.status == DeployStatus.ROLLING_BACK:
                await self._rollback_ended(config, deploy, incident, entry, outcome)
            if entry.kind == Step.RESOLVED:
                owner.resolved = True
                await self.recorder.record(
                    deploy, DeployStep.CLEARED, entry.message, incident=incident.id
                )
            # Followed until both are known: a rollback running as the incident resolves
            # still has its outcome to tell.
            if owner.resolved and deploy.status != DeployStatus.ROLLING_BACK:
                self.owner = None

    async def _rollback_ended(
        self,
        config: DeploysConfig,
        deploy: Deploy,
        incident: Incident,
        entry: TimelineEntry,
        outcome: DeployStatus,
    ) -> None:
        reasons = str(incident.trigger.get("reasons", incident.summary))
        if outcome is DeployStatus.ROLLED_BACK:
            after = entry.ts - deploy.started_at
            failing = entry.ts - float(incident.trigger.get("failing_since", deploy.started_at))
            message = (
                f"rolled back {after:.0f}s after the deploy, {failing:.0f}s after the first "
                f"failing check: {entry.message}"
            )
            await self.recorder.end(
                deploy,
                outcome,
                DeployStep.ROLLED_BACK,
                message,
                seconds_after_deploy=after,
                seconds_after_first_failure=failing,
                incident=incident.id,
            )
            self.metrics.rollback_seconds.observe(after)
            announcement = messages.rolled_back(deploy, reasons, entry.message)
        else:
            message = f"not rolled back: {entry.message}"
            await self.recorder.end(
                deploy, outcome, DeployStep.NOT_ROLLED_BACK, message, incident=incident.id
            )
            announcement = messages.not_rolled_back(deploy, reasons, entry.message)
        self.metrics.deploys.labels(outcome).inc()
        self.announcements.post(deploy, config.announce, announcement)


def _outcome(entry: TimelineEntry, rollback: str, *, acting: bool) -> DeployStatus | None:
    """What a plan entry says of the rollback: done, not done, or nothing yet."""
    if entry.kind in STOPPED:
        return DeployStatus.NOT_ROLLED_BACK
    facts = entry.step
    if facts is None or facts.remediation != rollback or facts.hook:
        # Resolved before the rollback began: the values were back within their limits.
        resolved = entry.kind == Step.RESOLVED and not acting
        return DeployStatus.NOT_ROLLED_BACK if resolved else None
    if entry.kind == Step.RESULT:
        return DeployStatus.ROLLED_BACK if facts.ok else DeployStatus.NOT_ROLLED_BACK
    return DeployStatus.NOT_ROLLED_BACK if entry.kind in NOT_RUN else None
