"""docker compose as the compose remediations see it: the project's compose file, and the
remediations built on it (tests/*/test_remediation_compose.py), run by the stand-in docker
(tests/bin/docker, tests/fakes/standin.py) when given one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from remediations.compose import (
    ComposeRollback,
    ComposeRollbackConfig,
    ComposeScale,
    ComposeScaleConfig,
)
from tests.fakes.standin import StandIn, with_standin


def project_directory(root: Path, image: str) -> Path:
    """The compose project `shop` in root/shop, its web service on `image`."""
    directory = root / "shop"
    directory.mkdir()
    write_compose(directory, image)
    return directory


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
