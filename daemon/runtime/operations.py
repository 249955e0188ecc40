"""The operator's door into the running daemon: daemon/api/port.py's `Operations`, over the
engine, the pipeline and the scheduler of the moment (a reload may replace them)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from daemon.api.check_query import STATUSES, TROUBLE_RANK, CheckQuery
from daemon.api.port import RunStart
from daemon.core.models import Incident, Observation, RuleState, Step
from daemon.deploys.models import DeployEvent
from daemon.deploys.vercel import VercelDelivery
from daemon.engine.alert_caps import CAP_SUFFIX
from daemon.jobs.runner import JobBusy, UnknownJob
from daemon.pipeline.approvals import Decision, Pending
from daemon.pipeline.plans import BLIND_SUFFIX
from daemon.pipeline.silences import Silence
from daemon.procedures.models import ProcedureRun
from daemon.store.protocol import Deploy, JobRun

if TYPE_CHECKING:
    from daemon.runtime.daemon import Daemon


class Operations:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def open_incident(self, incident_id: str) -> Incident | None:
        incidents = self._daemon.engine.incidents.values()
        return next((i for i in incidents if i.id == incident_id), None)

    async def acknowledge(self, incident: Incident, by: str, reason: str) -> bool:
        if incident.acknowledged_by is not None:
            return False
        message = f"acknowledged by {by}" + (f": {reason}" if reason else "")
        recorder, now = self._daemon.pipeline.recorder, self._daemon.clock.now()
        incident.acknowledged_by, incident.acknowledged_at = by, now
        async with recorder.batch():  # the state and its record, in one transaction
            await self._daemon.store.acknowledge_incident(incident.id, by, now)
            await recorder.record(incident, Step.ACKNOWLEDGED, message, by=by, reason=reason)
        return True

    async def resolve(self, incident_id: str, by: str, reason: str) -> bool:
        return await self._daemon.engine.resolve_by_operator(incident_id, by, reason)

    def decide(self, incident_id: str, decision: Decision) -> bool:
        return self._daemon.pipeline.approvals.decide(incident_id, decision)

    def pending_approvals(self) -> list[Pending]:
        return list(self._daemon.pipeline.approvals.pending.values())

    def silences(self, now: float, *, include_expired: bool) -> list[Silence]:
        return self._daemon.pipeline.silences.list(now, include_expired=include_expired)

    async def add_silence(self, silence: Silence) -> None:
        await self._daemon.pipeline.silences.add(silence)

    async def expire_silence(self, silence_id: str, now: float) -> Silence | None:
        return await self._daemon.pipeline.silences.expire(silence_id, now)

    async def rules(self) -> list[dict[str, Any]]:
        engine, pipeline = self._daemon.engine, self._daemon.pipeline
        rules: list[dict[str, Any]] = []
        for name, evaluator in sorted(engine.evaluators.items()):
            rules.append(
                {
                    "name": name,
                    "kind": "check",
                    "when": str(evaluator.config.condition),
                    "state": evaluator.state.name.lower(),
                    "blind": evaluator.blind,
                    "blind_reason": evaluator.blind_reason,
                    "last_value": evaluator.last_value,
                }
            )
        for name, rule in sorted(engine.alert_rules.items()):
            state = RuleState.FIRING if rule.firing else RuleState.INACTIVE
            match = rule.config.alert_match
            rules.append(
                {
                    "name": name,
                    "kind": "alert",
                    "when": match.model_dump() if match is not None else None,
                    "state": state.name.lower(),
                    "firing_alerts": len(rule.firing),
                }
            )
        for entry in rules:
            incident = engine.incidents.get(entry["name"])
            entry["incident"] = incident.id if incident else None
            entry["circuit_open"] = await pipeline.breaker.is_open(entry["name"])
        return rules

    def has_rule(self, rule: str) -> bool:
        engine = self._daemon.engine
        return rule in engine.evaluators or rule in engine.alert_rules

    def unknown_target(self, silence: Silence) -> str | None:
        """Why the silence could match nothing (a rule or check this config does not have: a
        typo would silence nothing and say nothing), naming the field; None when it can."""
        engine, checks = self._daemon.engine, self._daemon.config.checks
        if silence.rule is not None:
            # `RULE:blind` and `RULE:alert_cap` incidents are the rule's own.
            rule = silence.rule.removesuffix(BLIND_SUFFIX).removesuffix(CAP_SUFFIX)
            if not self.has_rule(rule):
                return "rule: " + no_such(
                    "rule", silence.rule, [*engine.evaluators, *engine.alert_rules]
                )
        if silence.check is not None and silence.check not in checks:
            return "check: " + no_such("check", silence.check, list(checks))
        return None

    async def reset_circuit(self, rule: str) -> bool:
        return await self._daemon.pipeline.reset_circuit(rule)

    def run_check(self, check: str) -> RunStart:
        scheduler = self._daemon.scheduler
        if check not in scheduler.jobs:
            return RunStart.UNKNOWN
        return RunStart.STARTED if scheduler.run_now(check) else RunStart.RUNNING

    def checks(self, query: CheckQuery) -> dict[str, Any]:
        """The checks the query selects, each with its last observation; `total` of them
        before paging, and every check's count by status."""
        daemon = self._daemon
        configured = daemon.config.checks
        counts = dict.fromkeys(STATUSES, 0)
        chosen: list[tuple[int, str, Observation | None]] = []
        for name in sorted(configured):
            obs = daemon.observed.latest(name)
            status = obs.status.name.lower() if obs else "none"
            counts[status] += 1
            if (query.status is None or status == query.status) and query.match in name:
                rank = TROUBLE_RANK[status] if query.order == "trouble" else 0
                chosen.append((rank, name, obs))
        chosen.sort(key=lambda c: c[0])  # stable: by name within a rank
        end = None if query.limit is None else query.offset + query.limit
        items = [
            self._check(name, configured[name].type, configured[name].interval, obs, query)
            for _, name, obs in chosen[query.offset : end]
        ]
        return {"checks": items, "total": len(chosen), "counts": counts}

    def _check(
        self, name: str, type_: str, interval: float, obs: Observation | None, query: CheckQuery
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "name": name,
            "type": type_,
            "interval": interval,
            "status": obs.status.name.lower() if obs else None,
            # JSON has no NaN: a value that is not a number is shown as none.
            "values": {k: (v if math.isfinite(v) else None) for k, v in sorted(obs.values.items())}
            if obs
            else {},
            "reason": obs.reason if obs else "",
            "at": obs.ts if obs else None,
            "duration": obs.duration if obs else None,
        }
        if query.history:
            observed = self._daemon.observed
            item["plotted"] = observed.plotted(name)
            item["recent"] = observed.recent(name)
        return item

    async def jobs(self) -> list[dict[str, Any]]:
        runner = self._daemon.jobs
        latest = await self._daemon.store.latest_job_runs()
        succeeded = await self._daemon.store.latest_job_runs("succeeded")
        listed: list[dict[str, Any]] = []
        for name, entry in sorted(runner.jobs.items()):
            config = entry.config
            last, good = latest.get(name), succeeded.get(name)
            listed.append(
                {
                    "name": name,
                    "run": config.run,
                    "schedule": config.schedule,
                    "timezone": config.timezone,
                    "enabled": config.enabled,
                    "running": entry.running,
                    "next_at": entry.due,
                    "last_run": last.to_json() if last else None,
                    "last_success_at": good.ended_at if good else None,
                }
            )
        return listed

    async def job_runs(self, job: str, limit: int) -> list[JobRun] | None:
        if job not in self._daemon.jobs.jobs:
            return None
        return await self._daemon.store.job_runs(job, limit)

    def run_job(self, job: str) -> RunStart:
        try:
            self._daemon.jobs.run_now(job)
        except UnknownJob:
            return RunStart.UNKNOWN
        except JobBusy:
            return RunStart.RUNNING
        return RunStart.STARTED

    async def deploy(self, event: DeployEvent) -> tuple[Deploy, str]:
        return await self._daemon.deploys.deploy(event)

    async def vercel_event(self, delivery: VercelDelivery) -> dict[str, Any]:
        return await self._daemon.deploys.vercel(delivery)

    async def start_procedure(self, name: str, params: dict[str, str], by: str) -> ProcedureRun:
        return await self._daemon.procedures.start(name, params, by)

    def cancel_procedure(self, run_id: str, by: str, reason: str) -> bool:
        return self._daemon.procedures.cancel(run_id, by, reason)


def no_such(kind: str, name: str, known: list[str]) -> str:
    """ "no rule 'app_dwn' (did you mean 'app_down'?)", else the names there are (a few)."""
    import difflib  # only to word a refusal

    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"no {kind} {name!r} (did you mean {close[0]!r}?)"
    shown = sorted(known)[:10]
    more = ", ..." if len(known) > len(shown) else ""
    return (
        f"no {kind} {name!r} (available: {', '.join(shown)}{more})"
        if shown
        else f"no {kind} {name!r} (none defined)"
    )
