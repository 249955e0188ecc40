"""docker compose as the compose remediations see it: the stand-in docker's state
(tests/bin/docker), the compose file, and the remediations built on them
(tests/*/test_remediation_compose.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from remediations.compose import (
    ComposeRollback,
    ComposeRollbackConfig,
    ComposeScale,
    ComposeScaleConfig,
)
from tests.fakes.standin import StandInFiles


class StandIn(StandInFiles):
    """The stand-in docker's log of calls and its state (which containers run what)."""

    def set(self, **docker: Any) -> None:
        state = self.state()
        state.setdefault("docker", {}).update(docker)
        self.write(state)

    def run(self, service: str, *images: str, state: str = "running") -> None:
        """The service's containers run these images (one container each)."""
        projects = self.state().get("docker", {}).get("projects", {})
        containers = [
            {"number": n, "image": image, "state": state} for n, image in enumerate(images, 1)
        ]
        projects.setdefault("shop", {})[service] = containers
        self.set(projects=projects)

    def images(self, service: str = "web") -> list[str]:
        containers = self.state()["docker"]["projects"]["shop"][service]
        return [c["image"] for c in containers]


def write_compose(directory: Path, image: str) -> None:
    (directory / "docker-compose.yml").write_text(
        f"services:\n  web:\n    image: {image}\n    ports: ['8080:80']\n"
        "  db:\n    image: postgres:16\n"
    )


def config(project: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "project_directory": str(project),
        "files": ["docker-compose.yml"],
        "project_name": "shop",
        "service": "web",
        **overrides,
    }


def with_standin(standin: StandIn | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides`, with the stand-in's variables added to its `env:`."""
    if standin is None:
        return overrides
    return {**overrides, "env": {**standin.env, **overrides.get("env", {})}}


def rollback(project: Path, standin: StandIn | None = None, **overrides: Any) -> ComposeRollback:
    fields = with_standin(standin, overrides)
    model = ComposeRollbackConfig.model_validate(
        {"type": "compose_rollback", **config(project, **fields)}
    )
    return ComposeRollback("rollback-web", model)


def scale(project: Path, standin: StandIn | None = None, **overrides: Any) -> ComposeScale:
    fields = with_standin(standin, {"max": 3, **overrides})
    model = ComposeScaleConfig.model_validate(
        {"type": "compose_scale", **config(project, **fields)}
    )
    return ComposeScale("scale-web", model)
