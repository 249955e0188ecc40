"""The daemon's lifecycle: start in order, run, reload on SIGHUP, drain and stop on SIGTERM.

A start that fails closes what it had started, in reverse, and says why in one line; a core
task that dies while running (supervisor.py) stops the daemon, which exits non-zero. Over 400
lines because it is the one owner of the lifecycle (start, reload, signals, readiness, stop):
the order of start and stop reads in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import secrets
import signal
import socket
import sqlite3
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from checks.base import CHECKS, Check, CheckConfig, CheckContext
from daemon.api.acts import carry_out
from daemon.api.app import build_app
from daemon.api.port import Answer
from daemon.api.servers import start_site
from daemon.clients.lean_http import LeanHttpClient
from daemon.config.document import RunbookConfig
from daemon.config.loader import config_hash, load_config
from daemon.config.problems import ConfigError
from daemon.config.store import PostgresStoreSettings
from daemon.core.clock import Clock, SystemClock
from daemon.core.models import Incident, Observation
from daemon.core.streak import FailureStreak
from daemon.deploys.announce import Announcements
from daemon.deploys.timeline import DeployRecorder
from daemon.deploys.watcher import DeployWatcher
from daemon.engine.alerts import Alert, AlertCapReached
from daemon.engine.engine import Engine
from daemon.engine.timeline import Recorder
from daemon.jobs.runner import JobRunner
from daemon.pipeline.pipeline import Pipeline
from daemon.pipeline.plan import Plan
from daemon.pipeline.safety import Budget
from daemon.procedures.runner import ProcedureRunner
from daemon.runtime import check_workers
from daemon.runtime.forwarding import ForwardedRequests, Forwarder
from daemon.runtime.leadership import Leadership, Role
from daemon.runtime.metrics import Metrics
from daemon.runtime.observed import Observed
from daemon.runtime.operations import Operations
from daemon.runtime.scheduler import Scheduler
from daemon.runtime.sdnotify import Notifier
from daemon.runtime.storage import build_store, describe
from daemon.runtime.supervisor import Supervisor
from daemon.store.protocol import Store, StoreUnavailable
from daemon.store.sqlite.lock import StateDirLock
from daemon.store.sqlite.repository import SqliteStore
from remediations.base import REMEDIATIONS, Remediation, RemediationConfig, RemediationContext

log = structlog.get_logger("runbookd")

TICK_SECONDS = 1.0
PRUNE_EVERY = 86400.0


class ExitCode(IntEnum):
    """`runbookd run`'s exit status (README "Exit codes", systemd/runbookd.service)."""

    OK = 0  # stopped by SIGTERM or SIGINT
    CONFIG_INVALID = 2  # restarting cannot help: systemd does not (RestartPreventExitStatus=)
    # Another runbookd holds the state directory (daemon/store/sqlite/lock.py): a restart
    # cannot help either.
    STATE_DIR_IN_USE = 2
    START_FAILED = 3  # e.g. the port is taken, the state directory cannot be written
    CORE_TASK_DIED = 4  # a core task ended while the daemon ran (daemon/supervisor.py)
    LOST_LEASE = 5  # a replica that led lost the lease; it starts again as a standby


class StartFailed(Exception):
    """The daemon could not start, and closed what it had started; the message is one line."""


# Failures of the machine rather than of runbookd (a port taken, a directory not writable, a
# database file that cannot be opened, a database server down): told in one line. Anything
# else is a bug, and logged with its traceback too.
EXPECTED_START_FAILURES = (OSError, sqlite3.Error, StoreUnavailable)


@contextlib.contextmanager
def starting(step: str) -> Iterator[None]:
    """Turns a failure of one start step into StartFailed naming the step."""
    try:
        yield
    except EXPECTED_START_FAILURES as exc:
        raise StartFailed(f"{step}: {_reason(exc)}") from exc
    except Exception as exc:
        log.exception("start failed", step=step)
        raise StartFailed(f"{step}: {type(exc).__name__}: {exc}") from exc


def _reason(exc: Exception) -> str:
    # "[Errno 98] error while attempting to bind on address (...): address already in use" says
    # the address twice and the errno once too often; the step already names the address.
    if isinstance(exc, OSError) and exc.errno is not None:
        reason = os.strerror(exc.errno)
        return f"{reason}: {exc.filename}" if exc.filename is not None else reason
    return str(exc) or type(exc).__name__


def build_checks(config: RunbookConfig) -> dict[str, tuple[Check, CheckConfig]]:
    # A validated config's types are registered: validating it imported their modules.
    return {name: (CHECKS.get(cfg.type)(name, cfg), cfg) for name, cfg in config.checks.items()}


def build_plan(config: RunbookConfig) -> Plan:
    instances: dict[str, Remediation] = {
        name: REMEDIATIONS.get(cfg.type)(name, cfg) for name, cfg in config.remediations.items()
    }
    settings = config.runbookd
    return Plan(
        instances,
        dict(config.remediations),
        dry_run=settings.dry_run,
        budget=Budget(settings.budget.max_actions, settings.budget.window),
        breaker_after=settings.circuit_breaker_after,
    )


def staleness(config: RunbookConfig) -> dict[str, float]:
    return {name: cfg.staleness() for name, cfg in config.checks.items()}


class Daemon:
    """Owns every long-lived object; startup in order, shutdown in reverse."""

    def __init__(
        self,
        config: RunbookConfig,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.clock: Clock = clock or SystemClock()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        # runbookd_alerts_received_total's children by label values (a few sources and states).
        self._alert_counters: dict[tuple[str, str, str], Counter] = {}
        # A store given (tests) is the caller's; one built from the config is the daemon's,
        # with the SQLite state directory's lock, taken first thing at start.
        self._state_lock: StateDirLock | None = None
        if store is None:
            store, self._state_lock = build_store(config.runbookd)
        self.store: Store = store
        self.recorder = Recorder(self.store, self.clock)
        # Several replicas on one PostgreSQL database elect the one that acts.
        self.leadership: Leadership | None = None
        self.acting = False
        self.lost_lease = False
        chosen = config.runbookd.store
        if isinstance(chosen, PostgresStoreSettings):
            holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
            self.leadership = Leadership(
                self.store,
                self.clock,
                holder,
                ttl=chosen.lease_ttl,
                metrics=self.metrics.leader_metrics(),
            )
        self.forwarder = Forwarder(self.store, self.clock)
        self.observed = Observed(lambda: self.scheduler, lambda: self.config.rules)
        self.port: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        # What start() opened, each with how to close it: stop() (or a failed start) closes
        # them in reverse.
        self._opened = contextlib.AsyncExitStack()
        self._stopping = asyncio.Event()
        self.supervisor = Supervisor(on_failure=self._core_task_died)
        self.config_hash = ""
        self.reload_problems: list[str] = []
        self._started = asyncio.Event()
        self.notifier = Notifier()  # inert unless systemd set NOTIFY_SOCKET
        self.operations = Operations(self)  # what the API may do (daemon/api/port.py)

    # -- readiness, for /readyz and sd_notify ------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """Ready once started: config loaded, store open, incidents restored, API serving,
        scheduler running. The first round is not waited for (with phases spread over the
        interval it takes a whole one): until its check has run, a rule is blind and never
        acts. The reason tells how far the first round is."""
        if self.supervisor.failure is not None:
            return False, f"failed: {self.supervisor.failure}"
        if self._stopping.is_set():
            return False, "stopping"
        if not self._started.is_set():
            return False, "starting"
        if self.role() == "standby":
            return True, f"standby: {self.leader() or 'no replica'} leads"
        ran, checks = self.first_round()
        return True, (f"first round: {ran}/{checks} checks have run" if ran < checks else "ok")

    def first_round(self) -> tuple[int, int]:
        """(checks that have run at least once, checks configured)."""
        if not self._started.is_set():
            return 0, len(self.config.checks)
        jobs = self.scheduler.jobs.values()
        return sum(job.runs > 0 for job in jobs), len(jobs)

    def health(self) -> tuple[bool, str]:
        """Alive, unless a core task died: then checks no longer run or pages no longer go
        out, whatever else still answers, and the daemon is on its way out."""
        failure = self.supervisor.failure
        return (False, failure) if failure is not None else (True, "ok")

    def status_line(self) -> str:
        """One line for `systemctl status` (sd_notify STATUS=)."""
        if self.supervisor.failure is not None:
            return f"failed, stopping: {self.supervisor.failure}"
        if self._stopping.is_set():
            return "stopping: draining running remediations" if self.pipeline.busy else "stopping"
        ready, why = self.ready()
        if not ready:
            return f"starting: {why}"
        incidents = len(self.engine.incidents)
        line = (
            f"watching {_count(len(self.config.checks), 'check')}, "
            f"{_count(len(self.config.rules), 'rule')}; "
            f"{_count(incidents, 'incident')} open"
        )
        if self.config.runbookd.dry_run:
            line += " (dry run)"
        return line if why == "ok" else f"{line}; {why}"

    # -- what the API steers -------------------------------------------------------------------

    async def intake(self, alerts: list[Alert]) -> int:
        """One request's alerts: committed to the store as one transaction before this
        returns (the caller answers only then); the counter moves once per label set.
        Raises AlertCapReached, with the rest committed and counted, if some new firing
        alerts were refused at a cap."""
        try:
            routed = await self.engine.alerts(alerts)
        except AlertCapReached as exc:
            self._count_received(alerts, exc.routed)
            raise
        return self._count_received(alerts, routed)

    def _count_received(self, alerts: list[Alert], routed: list[list[str]]) -> int:
        counts: dict[tuple[str, str, str], int] = {}
        for a, rules in zip(alerts, routed, strict=True):
            state = "firing" if a.firing else "resolved"
            key = (a.source, state, "matched" if rules else "unmatched")
            counts[key] = counts.get(key, 0) + 1
        for labels, count in counts.items():
            counter = self._alert_counters.get(labels)
            if counter is None:  # labels() takes a lock and checks its arguments: once each
                counter = self._alert_counters[labels] = self.metrics.alerts.labels(*labels)
            counter.inc(count)
        return sum(1 for rules in routed if rules)

    async def forward(self, act: str, args: dict[str, Any]) -> Answer:
        return await self.forwarder.forward(act, args)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Build, then open in order: store, incidents, API, plans and outbox, checks.

        The API listens before a plan resumes or a check starts (a check's start may wait for
        its service up to its timeout), so a taken port fails the start before anything acts.
        If a step fails, what was opened closes again in reverse, and StartFailed says which
        step and why.
        """
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise

    async def _start(self) -> None:
        settings = self.config.runbookd
        with starting("cannot build the checks and remediations"):
            checks, plan = build_checks(self.config), build_plan(self.config)
        if (lock := self._state_lock) is not None:
            try:
                lock.acquire()  # StateDirInUse goes through: `runbookd run` exits 2
            except OSError as exc:
                where = f"cannot lock the state directory {lock.directory}"
                raise StartFailed(f"{where}: {_reason(exc)}") from exc
            self._opened.callback(lock.release)
        where = f" {self.store.path}" if isinstance(self.store, SqliteStore) else ""
        with starting(f"cannot open the store{where}"):
            await self.store.open()
        self._opened.push_async_callback(self.store.close)
        connector = aiohttp.TCPConnector(limit=settings.max_checks_in_flight + 16)
        self._session = session = aiohttp.ClientSession(connector=connector)
        self._opened.push_async_callback(session.close)
        # Plain GETs and HEADs of http checks: as many idle connections kept per server as
        # aiohttp's connector keeps in all.
        lean_http = LeanHttpClient(max_idle_per_host=settings.max_checks_in_flight + 16)
        self._opened.push_async_callback(lean_http.close)
        processes = check_workers.resolve(
            settings.check_processes, [check for check, _ in checks.values()]
        )
        self._build(session, lean_http, plan, processes)
        host, port = settings.listen_address
        if self.leadership is None:  # one daemon alone: it acts from the start
            with starting("cannot restore incidents"):
                await self.engine.restore(announce=False)
            with starting(f"cannot listen on {host}:{port}"):
                await self._start_api()
            await self._act(checks)
        else:  # one of several replicas: it acts once it holds the lease
            with starting(f"cannot listen on {host}:{port}"):
                await self._start_api()
            with starting("cannot claim the lease"):
                await self._follow_the_lease(checks)
        self._loaded(self.config)
        self._started.set()
        log.info(
            "started",
            listen=f"{host}:{self.port}",
            store=describe(self.store),
            role=self.role(),
            checks=len(self.config.checks),
            rules=len(self.config.rules),
            remediations=len(self.config.remediations),
            dry_run=settings.dry_run,
        )

    async def _act(self, checks: dict[str, tuple[Check, CheckConfig]]) -> None:
        """Resume plans, deploys and the outbox, start the checks and the jobs: what the one
        daemon, or the leader of several replicas, does."""
        settings = self.config.runbookd
        self.acting = True
        # Drained before the API closes: approvals and /readyz are answered while plans finish.
        self._opened.push_async_callback(self.pipeline.drain, settings.drain_grace)
        self._opened.push_async_callback(self.deploys.stop)
        with starting("cannot resume plans"):
            await self.engine.announce_restored()
            await self.deploys.restore()
            # With the plans of the incidents the engine raised itself (alert caps), and
            # those of deploys.
            plans = dict(self.config.rules) | self.engine.incident_plans() | self.deploys.plans()
            await self.pipeline.recover(self.engine.incidents.values(), plans)
            self.supervisor.watch(self.pipeline.start_outbox())
            self.supervisor.watch(
                self.pipeline.start_updates(lambda: self.engine.incidents.values(), self._shown)
            )
        self._opened.push_async_callback(self._stop_checking)
        with starting("cannot start the checks"):
            await self.scheduler.set_checks(checks)
            self.scheduler.start()
            self._ticker = asyncio.create_task(self._tick(), name="engine-tick")
            self.supervisor.watch(self._ticker)
        self._opened.push_async_callback(self.jobs.stop)
        with starting("cannot start the jobs"):
            await self.jobs.configure(self.config.jobs)
            await self.jobs.start()
        self._opened.push_async_callback(self.procedures.stop)
        with starting("cannot resume procedures"):
            await self.procedures.resume()
        if self.leadership is not None:  # what standbys hand over
            perform = functools.partial(carry_out, self)
            requests = ForwardedRequests(self.store, self.clock, self.leadership, perform)
            serving = asyncio.create_task(requests.serve(), name="forwarded-requests")
            self.supervisor.watch(serving)
            self._opened.push_async_callback(_cancel, serving)

    # -- several replicas: one acts, the others wait (runtime/leadership.py) -------------------

    def leader(self) -> str | None:
        return self.leadership.leader if self.leadership is not None else None

    def role(self) -> str:
        """ "single" (one daemon on its own store), "leader", or "standby"."""
        if self.leadership is None:
            return "single"
        return "leader" if self.acting else "standby"

    async def _follow_the_lease(self, checks: dict[str, tuple[Check, CheckConfig]]) -> None:
        """Claim the lease now and renew it from here on; act once it is ours. A leader that
        loses it stops the daemon (exit 5): what it had in flight is fenced, and it starts
        again as a standby with nothing of its old role left in memory."""
        leadership = self.leadership
        assert leadership is not None
        await leadership.renew()
        renewing = asyncio.create_task(leadership.run(), name="lease")
        self.supervisor.watch(renewing)

        async def resign() -> None:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            await leadership.resign()

        self._opened.push_async_callback(resign)
        await self._take_role(leadership, checks)  # the first answer, before start returns
        following = asyncio.create_task(self._follow(leadership, checks), name="leadership")
        self.supervisor.watch(following)
        self._opened.push_async_callback(_cancel, following)

    async def _follow(
        self, leadership: Leadership, checks: dict[str, tuple[Check, CheckConfig]]
    ) -> None:
        while True:
            await leadership.changed.wait()
            await self._take_role(leadership, checks)

    async def _take_role(
        self, leadership: Leadership, checks: dict[str, tuple[Check, CheckConfig]]
    ) -> None:
        leadership.changed.clear()
        if leadership.role is Role.LEADER and not self.acting:
            log.info("taking over: this replica leads", epoch=leadership.epoch)
            await self.engine.restore(announce=False)
            await self._act(checks if not self._started.is_set() else build_checks(self.config))
        elif leadership.role is Role.STANDBY and self.acting:
            log.error("lost the lease: stopping, to start again as a standby")
            self.lost_lease = True
            self.request_stop()
            await asyncio.Event().wait()  # until the stop cancels it

    def _build(
        self,
        session: aiohttp.ClientSession,
        lean_http: LeanHttpClient,
        plan: Plan,
        processes: int = 0,
    ) -> None:
        self.pipeline = Pipeline(
            plan,
            ctx=RemediationContext(session, self.clock),
            store=self.store,
            recorder=self.recorder,
            metrics=self.metrics,
            clock=self.clock,
            fence=self.leadership,  # None: one daemon alone, always free to act
        )
        self.engine = Engine(
            dict(self.config.rules),
            staleness=staleness(self.config),
            store=self.store,
            recorder=self.recorder,
            actions=self.pipeline,
            metrics=self.metrics,
            clock=self.clock,
            limits=self.config.runbookd.alerts,
            notifiers=lambda: self.pipeline.plan.notifiers(),
            fence=self.leadership,
        )
        announcements = Announcements(
            DeployRecorder(self.store, self.clock),
            clock=self.clock,
            lookup=self._action,
            ctx_for=lambda name: self.pipeline.actor.ctx_for(name),
            dry_run=lambda: self.config.runbookd.dry_run,
        )
        self.deploys = DeployWatcher(
            self.config.deploys,
            store=self.store,
            clock=self.clock,
            incidents=self.engine.open_incidents,
            healthy=self.pipeline.healthy,
            announcements=announcements,
            metrics=self.metrics.deploys,
            staleness=staleness(self.config),
        )
        self.recorder.listeners.append(self.deploys.on_entry)
        self.scheduler = Scheduler(
            ctx=CheckContext(session, self.clock, lean_http),
            clock=self.clock,
            sink=self._observe,
            metrics=self.metrics,
            max_in_flight=self.config.runbookd.max_checks_in_flight,
            watch=self.supervisor.watch,
        )
        if processes > 0:  # plain http checks in worker processes (check_workers.py)
            self.scheduler.remote = check_workers.CheckWorkers(
                processes,
                deliver=self.scheduler.deliver,
                skipped=self.scheduler.skipped,
                metrics=self.metrics,
                log_level=self.config.runbookd.log_level,
                max_in_flight=self.config.runbookd.max_checks_in_flight,
            )
        self.jobs = JobRunner(
            store=self.store,
            clock=self.clock,
            metrics=self.metrics.jobs,
            sink=self.engine.observe,
            actions=self._action,
            ctx_for=lambda name: self.pipeline.actor.ctx_for(name),
            approvals=self.pipeline.approvals,
            locks=self.pipeline.locks,
            dry_run=lambda: self.config.runbookd.dry_run,
            fence=self.leadership,
            watch=self.supervisor.watch,
        )
        self.procedures = ProcedureRunner(
            store=self.store,
            clock=self.clock,
            metrics=self.metrics.procedures,
            procedures=lambda: self.config.procedures,
            actions=self._action,
            jobs=self.jobs,
            checks=self.observed,
            ctx_for=lambda name: self.pipeline.actor.ctx_for(name),
            approvals=self.pipeline.approvals,
            locks=self.pipeline.locks,
            dry_run=lambda: self.config.runbookd.dry_run,
            fence=self.leadership,
        )

    async def _observe(self, obs: Observation) -> None:
        """A check's observation: to the rules, then to the deploy watch."""
        self.observed.note(obs)
        await self.engine.observe(obs)
        try:
            await self.deploys.observe(obs)
        except Exception:  # the rules have it; the deploy watch misses one, which is logged
            log.exception("deploy watch: observation handling failed", check=obs.check)

    def _shown(self, incident: Incident) -> float | None:
        """How often the status page promises an update of `incident` (None: not shown)."""
        page = self.config.status_page
        return page.update_every if page is not None and page.shows(incident.check) else None

    def _action(self, name: str) -> tuple[Remediation, RemediationConfig] | None:
        """A remediation a job runs or an announcement goes through, from the plan in force
        (a reload swaps it)."""
        plan = self.pipeline.plan
        if name not in plan.remediations:
            return None
        return plan.remediations[name], plan.configs[name]

    async def stop(self) -> None:
        """Stop taking work, let running remediations finish (bounded), close in reverse."""
        log.info("stopping", draining=self.pipeline.busy)
        await self._close()
        log.info("stopped")

    async def _close(self) -> None:
        """Close what start() opened, in reverse; each step runs even if one before failed."""
        self.supervisor.shutting_down()
        await self._opened.aclose()

    async def _stop_checking(self) -> None:
        # No new observation first; an observation being handled may finish (Scheduler.stop).
        await self.scheduler.stop()
        if self._ticker is not None:
            self._ticker.cancel()
            # If it died, the supervisor has told why: that is no reason to stop stopping.
            await asyncio.gather(self._ticker, return_exceptions=True)

    async def _start_api(self) -> None:
        host, port = self.config.runbookd.listen_address
        self._runner, self.port = await start_site(build_app(self), host, port)
        self._opened.push_async_callback(self._runner.cleanup)

    async def _tick(self) -> None:
        """Once a second: staleness. Once a day (and at start): history retention. A tick
        that fails (the store restarting) is logged, with its traceback, when it starts
        failing and when it works again, and the next tick tries again: a blip of the
        database must not stop the daemon (a leader cut off for longer steps down by its
        lease)."""
        next_prune = self.clock.now()
        streak = FailureStreak(log, "engine tick", "trying again every second")
        while True:
            now = self.clock.now()
            try:
                await self.engine.tick(now)
                if now >= next_prune:
                    await self._prune(now)
                    next_prune = now + PRUNE_EVERY
            except Exception:
                streak.failed()
            else:
                streak.worked()
            try:
                await self.deploys.tick(now)
            except Exception:  # a watch that cannot end now ends at a later tick
                log.exception("deploy watch: tick failed")
            await self.clock.sleep(TICK_SECONDS)

    async def _prune(self, now: float) -> None:
        pruned = await self.store.prune(now - self.config.runbookd.history_retention)
        if any(pruned):
            log.info("history pruned", incidents=pruned.incidents, actions=pruned.actions)

    # -- reload ------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Validate the config file again and swap it in; an invalid one keeps the old.

        Rules and checks whose config did not change keep their state; cooldowns, budgets
        and open incidents live in the store and carry on. Why a reload was refused stays
        in `reload_problems`.
        """
        if self.config_path is None:
            self.reload_problems = ["no config file to reload from"]
            return False
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
            checks, plan = build_checks(config), build_plan(config)
        except ConfigError as exc:
            self.metrics.reload_success.set(0)
            self.reload_problems = [str(p) for p in exc.problems]
            for problem in self.reload_problems:
                log.error("reload refused: keeping the running config", problem=problem)
            return False
        if _restart_only(config) != _restart_only(self.config):
            log.warning("settings under 'runbookd:' but the API's tokens change only on restart")
        _log_token_changes(self.config, config)
        self.pipeline.set_plan(plan)
        self.engine.set_rules(dict(config.rules), staleness(config))
        if self.acting:  # a standby runs no checks or jobs: it takes them from the config later
            await self.scheduler.set_checks(checks)
            await self.jobs.configure(config.jobs)
        self.deploys.configure(config.deploys, staleness(config))
        self.config = config
        self.observed.forget(config.checks.__contains__)
        self._loaded(config)
        self.reload_problems = []
        log.info("reloaded", checks=len(config.checks), rules=len(config.rules))
        return True

    def _loaded(self, config: RunbookConfig) -> None:
        self.config_hash = config_hash(config)
        self.metrics.reload_success.set(1)
        self.metrics.reload_time.set(self.clock.now())
        # The first 48 bits, exact in a float: enough to tell two configs apart on a graph.
        self.metrics.config_hash.set(int(self.config_hash[:12], 16))

    # -- running under a supervisor -----------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping.set()

    def _core_task_died(self, reason: str) -> None:
        # The supervisor logged it. A daemon that no longer does its job is not alive: no more
        # pings, and out, for systemd or the container runtime to start a fresh one.
        self.notifier.stop_watchdog()
        self.request_stop()

    async def serve(self) -> ExitCode:
        """Run until SIGTERM/SIGINT (exit code OK) or until a core task dies (CORE_TASK_DIED);
        SIGHUP reloads. Raises StartFailed, having closed what it opened, if it cannot start."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        reloads: set[asyncio.Task[bool]] = set()

        def on_hup() -> None:
            task = asyncio.create_task(self.reload_announced())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        try:
            await self.start()
        except BaseException:
            _remove_signal_handlers(loop)  # left behind, they would swallow SIGTERM for good
            raise
        if self.supervisor.failure is None:  # a core task may have died while starting
            self.notifier.start(self.status_line, self._started, watch=self.supervisor.watch)
        gc.enable()  # `runbookd run` starts with the cyclic GC off (daemon/cli.py)
        release_free_memory()
        # What startup built (modules, config, models) lives as long as the daemon: out of the
        # collector's sight, a full collection scans only what the running daemon holds.
        gc.freeze()
        try:
            await self._stopping.wait()
        finally:
            _remove_signal_handlers(loop)
            self.supervisor.shutting_down()  # the notifier's tasks end on purpose from here
            self.notifier.stopping(self.status_line())
            try:
                await self.stop()
            finally:
                await self.notifier.close()
        if self.supervisor.failure is not None:
            return ExitCode.CORE_TASK_DIED
        return ExitCode.LOST_LEASE if self.lost_lease else ExitCode.OK

    async def reload_announced(self) -> bool:
        """A reload framed for systemd; READY=1 also after a refusal: the old config runs."""
        announced = self.notifier.announced  # before READY=1, systemd is still starting us
        if announced:
            self.notifier.reloading()
        try:
            return await self.reload()
        finally:
            if announced:
                self.notifier.ready(self.status_line())


def _restart_only(config: RunbookConfig) -> object:
    """The settings a reload cannot change: `runbookd:` but for the API's tokens."""
    api = config.runbookd.api.model_copy(update={"tokens": []})
    return config.runbookd.model_copy(update={"api": api})


def _log_token_changes(old: RunbookConfig, new: RunbookConfig) -> None:
    before = {t.name: t for t in old.runbookd.api.tokens}
    after = {t.name: t for t in new.runbookd.api.tokens}
    for name in sorted(before.keys() - after.keys()):
        log.warning("api token revoked", token=name)
    for name in sorted(after.keys() - before.keys()):
        log.info("api token added", token=name, scope=after[name].scope)
    for name in sorted(before.keys() & after.keys()):
        if before[name] != after[name]:
            log.info("api token changed", token=name, scope=after[name].scope)


def _remove_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def release_free_memory() -> None:
    """Collect the garbage startup left and hand the heap pages it freed (compiling, reading
    and validating the config, building models) back to the OS: glibc keeps them, and an idle
    daemon would carry them for good. Without glibc, it only collects."""
    gc.collect()
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):
        return
    trim(0)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
