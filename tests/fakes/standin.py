"""The stand-in executables (tests/bin: docker, systemctl, pm2) as the tests see them: the log
of the calls they were given and the state file they share (which units, processes and
containers exist, and how they answer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class StandIn:
    def __init__(self, root: Path) -> None:
        self.log = root / "calls.jsonl"
        self.state_file = root / "state.json"
        # What a remediation's `env:` gives the tool so that the stand-in finds these files.
        self.env = {"STANDIN_LOG": str(self.log), "STANDIN_STATE": str(self.state_file)}

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def argvs(self) -> list[list[str]]:
        return [call["argv"] for call in self.calls()]

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def write(self, state: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(state))

    # --- docker ---------------------------------------------------------------------------

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

    # --- systemctl and pm2 ----------------------------------------------------------------

    def units(self, scope: str = "system", **units: dict[str, Any]) -> None:
        self.write({"systemd": {scope: {f"{name}.service": u for name, u in units.items()}}})

    def processes(self, *processes: dict[str, Any], **pm2: Any) -> None:
        self.write({"pm2": {"processes": list(processes), **pm2}})


def with_standin(standin: StandIn | None, config: dict[str, Any]) -> dict[str, Any]:
    """`config`, with the stand-in's variables added to its `env:`."""
    if standin is None:
        return config
    return {**config, "env": {**standin.env, **config.get("env", {})}}
