"""`systemd_restart` and `pm2_restart`: restart a service, then check it came back.

Both run their tool (systemctl, pm2) as argv lists through remediations.tools, never through a
shell; the unit or process name comes from the config alone. A restart that returns 0 is not
the end: the service must then report itself running (systemd "active", pm2 "online"),
checked a few times on the daemon's clock because a restarting service takes a moment.
"""

from __future__ import annotations

import builtins
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field

from daemon.core.models import Incident, RemediationResult
from daemon.core.units import PositiveDuration
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext
from remediations.tools import Argument, ToolConfig, ToolRun, run_tool

__all__ = ["Pm2Restart", "Pm2RestartConfig", "SystemdRestart", "SystemdRestartConfig"]

# systemd's unit name characters (unit_name_is_valid), with an optional @instance (not a bare
# template like "app@.service"); systemctl adds ".service" to a name without a type suffix.
# No globs: `restart web*` would restart every match.
UNIT = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_\\-][A-Za-z0-9:_.\\-]*)?")
UNIT_NAME_MAX = 255
# A pm2 process name or numeric id: no whitespace, nothing that reads as an option.
PM2_NAME = re.compile(r"[^\s-][^\s]*")


def _unit_name(value: str) -> str:
    if len(value) > UNIT_NAME_MAX or not UNIT.fullmatch(value) or value.startswith("-"):
        raise ValueError(f"not a valid systemd unit name: {value!r}")
    return value


def _pm2_name(value: object) -> str:
    # YAML reads `name: 3` as a number; pm2 takes ids and names alike as text.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a pm2 process name or numeric id")
    text = str(value)
    if not PM2_NAME.fullmatch(text) or "\0" in text:
        raise ValueError(f"not a pm2 process name or id: {text!r}")
    if text == "all":
        raise ValueError("restarting every pm2 process is not a remediation; name one")
    return text


class VerifiedRestartConfig(ToolConfig):
    """After the restart: up to `verify_attempts` looks, `verify_interval` apart."""

    verify_attempts: int = Field(
        default=5,
        ge=1,
        description="After the restart, how many times to look whether it is up before the "
        "run fails.",
    )
    verify_interval: PositiveDuration = Field(default=2.0, description="The time between looks.")

    def deadline(self) -> float:
        # The restart and every look are each bounded by `timeout`.
        waits = (self.verify_attempts - 1) * self.verify_interval
        return (1 + self.verify_attempts) * self.timeout + waits


# --- restart, then verify -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Look:
    """One check after the restart: is it up, what state it is in, and how we saw it."""

    up: bool
    state: str
    run: ToolRun


C = TypeVar("C", bound=VerifiedRestartConfig)


class _VerifiedRestart(Hooks, Generic[C]):
    """Restart, then look up to `verify_attempts` times until the service says it is up."""

    config: C
    # A restart interrupts requests in flight: running it twice is not free.
    idempotent: bool = False
    destructive: bool = False
    notifier: bool = False

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        argv, label = self._restart()
        restarted = await run_tool(argv, label, self.config)
        if not restarted.ok:
            return restarted.failure(**self._facts())
        seen, attempts = await self._look(), 1
        while not seen.up and attempts < self.config.verify_attempts:
            await ctx.clock.sleep(self.config.verify_interval)
            seen, attempts = await self._look(), attempts + 1
        data = {
            **restarted.data(),
            **self._facts(),
            "state": seen.state,
            "checks": attempts,
            "check_argv": seen.run.argv,
        }
        if seen.up:
            detail = f"restarted {self._subject()}; it is {seen.state}"
            return RemediationResult(ok=True, detail=detail, data=data)
        times = "once" if attempts == 1 else f"{attempts} times"
        detail = f"restarted {self._subject()}, but it is {seen.state} (checked {times})"
        return RemediationResult(ok=False, detail=detail, data=data)

    def _restart(self) -> tuple[list[str], str]:
        """The restart's argv and its label for a result's detail."""
        raise NotImplementedError

    async def _look(self) -> _Look:
        raise NotImplementedError

    def _subject(self) -> str:
        raise NotImplementedError

    def _facts(self) -> dict[str, Any]:
        raise NotImplementedError


# --- systemd_restart ------------------------------------------------------------------------


class SystemdRestartConfig(VerifiedRestartConfig):
    """`systemctl restart UNIT`, then `systemctl is-active UNIT` until it says `active`
    (up to `verify_attempts` looks); a restart that returns 0 but never comes up fails.
    runbookd runs systemctl itself, without sudo: its user needs the right to restart the
    unit (e.g. a polkit rule)."""

    example: ClassVar[str] = """
        remediations:
          restart_web:
            type: systemd_restart
            unit: web.service
            max_runs: {count: 3, window: 1h}
        """

    type: Literal["systemd_restart"]
    unit: Annotated[str, AfterValidator(_unit_name)] = Field(
        description="The unit's name (`web.service`, `worker@2`); no globs."
    )
    user: bool = Field(
        False,
        description="true: the user's own service manager (`systemctl --user`), which needs "
        "that user's session bus in `env:` (XDG_RUNTIME_DIR or DBUS_SESSION_BUS_ADDRESS).",
    )
    systemctl: Argument = Field("systemctl", description="The systemctl program.")


@REMEDIATIONS.register
class SystemdRestart(_VerifiedRestart[SystemdRestartConfig]):
    type: ClassVar[str] = "systemd_restart"
    Config: ClassVar[builtins.type[RemediationConfig]] = SystemdRestartConfig

    def __init__(self, name: str, config: SystemdRestartConfig) -> None:
        self.name = name
        self.config = config

    def _restart(self) -> tuple[list[str], str]:
        return self._command("restart")

    async def _look(self) -> _Look:
        # is-active prints the state and exits non-zero (3) unless "active": the output
        # decides, the exit status only confirms.
        run = await run_tool(*self._command("is-active"), self.config)
        if run.result.error is not None or run.result.timed_out:
            return _Look(False, _why_not(run), run)
        lines = run.result.stdout.strip().splitlines()
        state = lines[0] if lines else "unknown"
        return _Look(state == "active" and run.result.exit_code == 0, state, run)

    def _subject(self) -> str:
        return self.config.unit

    def _facts(self) -> dict[str, Any]:
        return {"unit": self.config.unit, "user": self.config.user}

    def _command(self, verb: str) -> tuple[list[str], str]:
        config = self.config
        head = [config.systemctl, *(["--user"] if config.user else []), verb]
        return [*head, config.unit], " ".join(head)


# --- pm2_restart ----------------------------------------------------------------------------


class Pm2RestartConfig(VerifiedRestartConfig):
    """`pm2 restart NAME`, then `pm2 jlist` until the process is `online`, every instance of
    it in cluster mode (up to `verify_attempts` looks); a restart that returns 0 but never
    comes up fails. `env:` needs PM2_HOME when the processes belong to another pm2 home."""

    example: ClassVar[str] = """
        remediations:
          restart_api:
            type: pm2_restart
            name: api
            env: {PM2_HOME: /home/deploy/.pm2}
        """

    type: Literal["pm2_restart"]
    name: Annotated[str, BeforeValidator(_pm2_name)] = Field(
        description="The process's name, or its numeric pm2 id (not `all`)."
    )
    update_env: bool = Field(
        False,
        description="Pass `--update-env`: the process takes the environment pm2 runs in here "
        "(the inherited few and `env:`), never the daemon's.",
    )
    pm2: Argument = Field("pm2", description="The pm2 program.")


@REMEDIATIONS.register
class Pm2Restart(_VerifiedRestart[Pm2RestartConfig]):
    type: ClassVar[str] = "pm2_restart"
    Config: ClassVar[builtins.type[RemediationConfig]] = Pm2RestartConfig

    def __init__(self, name: str, config: Pm2RestartConfig) -> None:
        self.name = name
        self.config = config

    def _restart(self) -> tuple[list[str], str]:
        config = self.config
        argv = [config.pm2, "restart", config.name]
        return argv + (["--update-env"] if config.update_env else []), "pm2 restart"

    async def _look(self) -> _Look:
        run = await run_tool([self.config.pm2, "jlist"], "pm2 jlist", self.config)
        if not run.ok:
            return _Look(False, _why_not(run), run)
        try:
            processes = parse_jlist(run.result.stdout)
        except ValueError as exc:
            return _Look(False, f"unreadable ({exc})", run)
        statuses = {_status(p) for p in processes if _is_named(p, self.config.name)}
        if not statuses:
            return _Look(False, "not in pm2's process list", run)
        # Cluster mode runs several instances under one name: all must be online.
        return _Look(statuses == {"online"}, ", ".join(sorted(statuses)), run)

    def _subject(self) -> str:
        return self.config.name

    def _facts(self) -> dict[str, Any]:
        return {"process": self.config.name}


def parse_jlist(stdout: str) -> list[dict[str, Any]]:
    """`pm2 jlist` prints one JSON array on one line, sometimes after notices of its own
    ("[PM2] Spawning PM2 daemon...")."""
    for line in reversed(stdout.splitlines()):
        try:
            processes = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(processes, list) and all(isinstance(p, dict) for p in processes):
            return processes
    raise ValueError("no JSON array of processes in the output")


def _is_named(process: dict[str, Any], name: str) -> bool:
    if name.isdigit():
        return str(process.get("pm_id")) == name
    return process.get("name") == name


def _status(process: dict[str, Any]) -> str:
    env = process.get("pm2_env")
    return str(env.get("status", "unknown")) if isinstance(env, dict) else "unknown"


def _why_not(run: ToolRun) -> str:
    """A look that could not be taken, as a state for the result."""
    return f"unknown ({run.failure().detail})"
