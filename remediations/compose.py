"""`compose_rollback` and `compose_scale`: act on one service of a Docker Compose project.

Both run `docker compose` (the v2 plugin) as argv lists through remediations.tools, never
through a shell. Every argument comes from the config or from docker's own output (the image
a container runs); nothing from an alert or a check reaches a command line.

Over 400 lines: two types (rollback, scale) that share how docker compose is found,
called and read.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import structlog
import yaml
from pydantic import Field, field_validator, model_validator

from daemon.core.models import Incident, RemediationResult
from daemon.core.units import Duration
from remediations.base import REMEDIATIONS, Hooks, RemediationConfig, RemediationContext
from remediations.tools import Argument, ToolConfig, ToolRun, run_tool

__all__ = [
    "ComposeConfig",
    "ComposeRollback",
    "ComposeRollbackConfig",
    "ComposeScale",
    "ComposeScaleConfig",
    "parse_ps",
]

log = structlog.get_logger("runbookd.remediations.compose")

# State keys (each remediation has its own namespace).
LAST_HEALTHY = "last_healthy"
SCALE_IN = "scale_in"
# Commands one execution runs (ps, the change, ps to verify); each is bounded by `timeout`.
COMMANDS_PER_RUN = 3
# What compose accepts as a service and a project name; neither may look like a flag.
SERVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
PROJECT_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
# An image as docker prints it: repo[:tag][@digest], or an image ID. Never a flag.
IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")


class ComposeConfig(ToolConfig):
    """What both compose remediations need to name one service of one project. `env` is
    how docker finds its engine and credentials (DOCKER_HOST, DOCKER_CONFIG, ...)."""

    project_directory: Path = Field(
        description="The project's directory (absolute): every docker command runs there, "
        "and relative `files` start there."
    )
    # Required: an explicit -f turns off compose's own file lookup, and the rollback layers
    # its override on top of exactly these.
    files: list[Argument] = Field(
        min_length=1, description="The compose files, passed as `-f` each, in order."
    )
    project_name: Annotated[str, Field(pattern=PROJECT_PATTERN)] | None = Field(
        None, description="Passed as `-p`; default: compose's own (the directory's name)."
    )
    service: Annotated[str, Field(pattern=SERVICE_PATTERN)] = Field(
        description="The compose service acted on."
    )
    docker: Argument = Field(
        "docker", description="The docker CLI; compose runs as its v2 plugin (`docker compose`)."
    )

    @field_validator("project_directory")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value


# --- running docker compose -----------------------------------------------------------------


class _Stop(Exception):
    """Ends an execution early with this result (a failed or unreadable command)."""

    def __init__(self, result: RemediationResult) -> None:
        super().__init__(result.detail)
        self.result = result


@dataclass(frozen=True, slots=True)
class Container:
    image: str
    state: str


class _Compose:
    """Runs `docker compose` for one service of one project."""

    def __init__(self, config: ComposeConfig) -> None:
        self.config = config

    def argv(self, *args: str, override: str | None = None) -> list[str]:
        config = self.config
        files = [*config.files, *([override] if override else [])]
        argv = [config.docker, "compose", *(arg for f in files for arg in ("-f", f))]
        if config.project_name:
            argv += ["-p", config.project_name]
        return [*argv, *args]

    async def run(self, *args: str, override: str | None = None) -> ToolRun:
        config = self.config
        label = f"{config.docker} compose {args[0]}"
        argv = self.argv(*args, override=override)
        return await run_tool(argv, label, config, cwd=config.project_directory)

    async def change(
        self, args: list[str], facts: dict[str, Any], override: str | None = None
    ) -> ToolRun:
        """Run a command that changes the project; _Stop with `facts` if it fails."""
        run = await self.run(*args, override=override)
        if not run.ok:
            raise _Stop(run.failure(**facts))
        return run

    async def running_after(self, change: ToolRun, facts: dict[str, Any], done: str) -> list[str]:
        """`running()` once `change` succeeded: a failure to look says what was done."""
        try:
            return await self.running()
        except _Stop as stop:
            detail = f"{done}, but could not check: {stop.result.detail}"
            data = {**change.data(), **facts}
            raise _Stop(RemediationResult(ok=False, detail=detail, data=data)) from None

    async def containers(self) -> list[Container]:
        """The service's containers as compose counts them (stopped ones too)."""
        ps = await self.run("ps", "--all", "--format", "json", self.config.service)
        if not ps.ok:
            raise _Stop(ps.failure())
        try:
            rows = parse_ps(ps.result.stdout)
        except ValueError as exc:
            detail = f"cannot read {ps.label} output: {exc}"
            raise _Stop(RemediationResult(ok=False, detail=detail, data=ps.data())) from None
        return [
            Container(str(row.get("Image", "")), str(row.get("State", "")))
            for row in rows
            if row.get("Service") == self.config.service and not _one_off(row)
        ]

    async def running(self) -> list[str]:
        """The image of each running container of the service."""
        return [c.image for c in await self.containers() if c.state == "running"]


def parse_ps(stdout: str) -> list[dict[str, Any]]:
    """`ps --format json`: JSON Lines since compose 2.21, a single JSON array before."""
    text = stdout.strip()
    try:
        if text.startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError("expected one JSON object per container")
    return rows


def _one_off(row: dict[str, Any]) -> bool:
    """`docker compose run` containers are not replicas of the service."""
    labels = row.get("Labels") or {}
    if isinstance(labels, str):  # "k=v,k=v" since compose 2.21, a mapping before
        labels = dict(item.partition("=")[::2] for item in labels.split(","))
    return str(labels.get("com.docker.compose.oneoff", "")).lower() == "true"


def _is_image(value: object) -> bool:
    return isinstance(value, str) and IMAGE.fullmatch(value) is not None


# --- compose_rollback -----------------------------------------------------------------------


class ComposeRollbackConfig(ComposeConfig):
    """Runs the service on the image last seen healthy. While the rules that use it are
    healthy, runbookd notes the image the service runs; on a run it pins the service to that
    image in an override file (the compose files themselves are never edited) and runs
    `docker compose up -d --no-deps` for the service at its current scale, then checks that
    every container runs that image. It fails when no healthy image was seen yet, or the
    service already runs it. A deploy without the override file lifts the pin."""

    example: ClassVar[str] = """
        remediations:
          rollback:
            type: compose_rollback
            project_directory: /srv/app
            files: [compose.yaml]
            service: web
            timeout: 2m
        """

    type: Literal["compose_rollback"]
    override_file: Argument = Field(
        ".runbookd/rollback.override.yml",
        description="Where runbookd writes the pin, relative to `project_directory`; it must "
        "not be one of `files`.",
    )

    @model_validator(mode="after")
    def _override_is_ours(self) -> ComposeRollbackConfig:
        if self.override_file in self.files:
            raise ValueError("override_file must not be one of files: runbookd rewrites it")
        return self

    def deadline(self) -> float:
        return COMMANDS_PER_RUN * self.timeout


@REMEDIATIONS.register
class ComposeRollback(Hooks):
    """Runs the service on the image last seen healthy, pinned by an override file."""

    type: ClassVar[str] = "compose_rollback"
    Config: ClassVar[builtins.type[RemediationConfig]] = ComposeRollbackConfig
    # Pinning the same image twice changes nothing; no data or capacity is lost.
    idempotent: bool = True
    destructive: bool = False
    notifier: bool = False

    def __init__(self, name: str, config: ComposeRollbackConfig) -> None:
        self.name = name
        self.config = config
        self.compose = _Compose(config)
        self._healthy_error: str | None = None

    async def healthy(self, ctx: RemediationContext) -> None:
        """Note the image the service runs while healthy, when it changed."""
        try:
            images = set(await self.compose.running())
        except _Stop as stop:
            self._note_healthy_error(stop.result.detail)
            return
        self._note_healthy_error(None)
        # Mid-rollout (two images) or nothing running: no single known-good image.
        if len(images) != 1:
            return
        image = images.pop()
        last = await ctx.state.get(LAST_HEALTHY)
        if _is_image(image) and (not isinstance(last, dict) or last.get("image") != image):
            await ctx.state.put(LAST_HEALTHY, {"image": image, "seen_at": ctx.clock.now()})

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        last = await ctx.state.get(LAST_HEALTHY)
        if not isinstance(last, dict) or not _is_image(last.get("image")):
            detail = f"no healthy image recorded yet for {self.config.service}"
            return RemediationResult(ok=False, detail=detail)
        try:
            return await self._roll_back(str(last["image"]), last.get("seen_at"))
        except _Stop as stop:
            return stop.result

    async def _roll_back(self, image: str, seen_at: object) -> RemediationResult:
        service, override = self.config.service, self.config.override_file
        containers = await self.compose.containers()
        running = sorted({c.image for c in containers if c.state == "running"})
        facts: dict[str, Any] = {"service": service, "image": image, "healthy_seen_at": seen_at}
        if running == [image]:
            detail = f"{service} is already running the last healthy image {image}"
            return RemediationResult(ok=False, detail=detail, data=facts)
        facts |= {"replaced": running, "override_file": override}
        await self._write_override(image, facts)
        up = await self.compose.change(self._up_args(len(containers)), facts, override)
        now_running = await self.compose.running_after(up, facts, f"pinned {service} to {image}")
        data = {**up.data(), **facts, "running": now_running}
        if set(now_running) != {image}:
            shown = ", ".join(sorted(set(now_running))) or "nothing"
            detail = f"pinned {service} to {image}, but it runs {shown}"
            return RemediationResult(ok=False, detail=detail, data=data)
        was = ", ".join(running) or "no running container"
        detail = f"rolled {service} back from {was} to {image} (pinned in {override})"
        return RemediationResult(ok=True, detail=detail, data=data)

    def _up_args(self, replicas: int) -> list[str]:
        # Without --scale, `up` converges on the configured count and would shrink a
        # scaled-out service: a rollback changes the image, not the capacity.
        service = self.config.service
        scale = ["--scale", f"{service}={replicas}"] if replicas else []
        return ["up", "-d", "--no-deps", *scale, service]

    async def _write_override(self, image: str, facts: dict[str, Any]) -> None:
        path = self.config.project_directory / self.config.override_file
        try:
            await asyncio.to_thread(_write_atomically, path, self._override_text(image))
        except OSError as exc:
            detail = f"cannot write {path}: {exc.strerror or exc}"
            raise _Stop(RemediationResult(ok=False, detail=detail, data=facts)) from None

    def _override_text(self, image: str) -> str:
        header = (
            f"# Written by runbookd ({self.name}): pins {self.config.service} to the image\n"
            "# last seen healthy. Deploying without this file (-f) lifts the pin.\n"
        )
        return header + yaml.safe_dump({"services": {self.config.service: {"image": image}}})

    def _note_healthy_error(self, error: str | None) -> None:
        # Logged on change only: healthy() runs every minute or so.
        if error != self._healthy_error:
            if error is not None:
                log.warning("cannot read the running image", remediation=self.name, error=error)
            else:
                log.info("reading the running image again", remediation=self.name)
        self._healthy_error = error


def _write_atomically(path: Path, text: str) -> None:
    """Compose never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- compose_scale --------------------------------------------------------------------------


class ComposeScaleConfig(ComposeConfig):
    """Scales the service out by `step` replicas, up to `max` (`docker compose up -d
    --scale`); once the incident resolves and `scale_in_after` has passed quietly, back to the
    count before (never below `min`). Firing again meanwhile cancels the scale-in."""

    example: ClassVar[str] = """
        remediations:
          scale_out:
            type: compose_scale
            project_directory: /srv/app
            files: [compose.yaml, compose.prod.yaml]
            service: worker
            step: 2
            max: 8
            scale_in_after: 30m
        """

    type: Literal["compose_scale"]
    step: int = Field(default=1, ge=1, description="Replicas added per run.")
    min: int = Field(default=1, ge=0, description="Scaling back in never goes below this.")
    max: int = Field(ge=1, description="Scaling out never goes above this (at least `min`).")
    scale_in_after: Duration = Field(
        900.0,
        description="Once the incident resolves, wait this long, then go back to the count "
        "before scaling out.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ComposeScaleConfig:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) exceeds max ({self.max})")
        return self

    def deadline(self) -> float:
        # resolve() waits scale_in_after before its commands, under the same outer bound.
        return self.scale_in_after + COMMANDS_PER_RUN * self.timeout


@REMEDIATIONS.register
class ComposeScale(Hooks):
    """Adds `step` replicas up to `max`; after the incident, goes back (never below `min`)."""

    type: ClassVar[str] = "compose_scale"
    Config: ClassVar[builtins.type[RemediationConfig]] = ComposeScaleConfig
    # A second run adds another step: not idempotent. Adding replicas loses nothing.
    idempotent: bool = False
    destructive: bool = False
    notifier: bool = False

    def __init__(self, name: str, config: ComposeScaleConfig) -> None:
        self.name = name
        self.config = config
        self.compose = _Compose(config)

    async def execute(self, ctx: RemediationContext, incident: Incident) -> RemediationResult:
        try:
            return await self._scale_out(ctx)
        except _Stop as stop:
            return stop.result

    async def resolve(
        self, ctx: RemediationContext, incident: Incident
    ) -> RemediationResult | None:
        pending = await ctx.state.get(SCALE_IN)
        if not isinstance(pending, dict):
            return None
        # Cancelled here if the rule fires again; the pending scale-in then stays recorded.
        await ctx.clock.sleep(self.config.scale_in_after)
        try:
            return await self._scale_in(ctx, int(pending["replicas"]))
        except _Stop as stop:
            return stop.result

    async def _scale_out(self, ctx: RemediationContext) -> RemediationResult:
        config = self.config
        current = len(await self.compose.running())
        if current >= config.max:
            detail = f"{config.service} is already at max {config.max} replicas"
            return RemediationResult(ok=False, detail=detail, data={"replicas": current})
        target = max(min(current + config.step, config.max), config.min)
        # The count to return to: set by an episode's first scale-out, before acting, so
        # neither a crash nor a second scale-out loses it.
        if await ctx.state.get(SCALE_IN) is None:
            await ctx.state.put(SCALE_IN, {"replicas": current, "since": ctx.clock.now()})
        return await self._scale(current, target, "out")

    async def _scale_in(self, ctx: RemediationContext, before: int) -> RemediationResult:
        service = self.config.service
        current = len(await self.compose.running())
        target = max(before, self.config.min)
        if current <= target:
            await ctx.state.put(SCALE_IN, None)
            detail = f"{service} is at {current} replicas already; nothing to scale in"
            return RemediationResult(ok=True, detail=detail, data={"replicas": current})
        result = await self._scale(current, target, "in")
        if result.ok:
            await ctx.state.put(SCALE_IN, None)
        return result

    async def _scale(self, current: int, target: int, direction: str) -> RemediationResult:
        service = self.config.service
        facts = {"service": service, "replicas_before": current, "replicas_target": target}
        # Named service and --no-deps: other services keep their own counts and state.
        args = ["up", "-d", "--no-deps", "--no-recreate", "--scale", f"{service}={target}"]
        up = await self.compose.change([*args, service], facts)
        done = f"scaled {service} {direction} to {target} replicas"
        count = len(await self.compose.running_after(up, facts, done))
        data = {**up.data(), **facts, "replicas_after": count}
        if count != target:
            detail = f"{done}, but {count} are running"
            return RemediationResult(ok=False, detail=detail, data=data)
        detail = f"scaled {service} {direction} from {current} to {target} replicas"
        return RemediationResult(ok=True, detail=detail, data=data)
