"""The stand-in executables' (tests/bin) log of calls and their shared state file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class StandInFiles:
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
