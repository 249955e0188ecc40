"""The config the daemon tests (tests/*/test_daemon.py) run: the `health` check on the app that
tests/conftest.py serves (`app_state`), and a `down` rule that posts the incident to its /hook."""

from __future__ import annotations

from pathlib import Path

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
checks:
  health:
    type: http
    url: {url}/health
    interval: 100ms
    timeout: 1s
rules:
  down:
    when: health.up < 1
    do: [notify]
remediations:
  notify:
    type: http
    url: {url}/hook
    body: {{incident: "{{{{ incident.id }}}}"}}
"""


def write_config(directory: Path, app_url: str) -> Path:
    """CONFIG in `directory`, its state beside it."""
    path = directory / "runbookd.yaml"
    path.write_text(CONFIG.format(state=directory / "state", url=app_url))
    return path
