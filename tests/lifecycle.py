"""What the lifecycle tests (tests/*/test_lifecycle.py) start: a daemon watching the app that
tests/conftest.py serves (`app_state`), on a port and state directory a test may choose."""

from __future__ import annotations

from pathlib import Path

WAIT = 30.0

CONFIG = """
runbookd:
  listen: 127.0.0.1:{port}
  state_dir: {state}
checks:
  health: {{type: http, url: "{url}/health", interval: 100ms, timeout: 1s}}
"""


def write_config(tmp_path: Path, url: str, *, port: int = 0, state: Path | None = None) -> Path:
    path = tmp_path / "runbookd.yaml"
    path.write_text(CONFIG.format(port=port, state=state or tmp_path / "state", url=url))
    return path
