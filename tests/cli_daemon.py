"""The daemon the `runbookd incidents` and `runbookd silence` tests (tests/*/test_cli_client.py)
talk to: it watches the app tests/conftest.py serves (`app_state`), and its API takes TOKEN."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from daemon.runtime.daemon import Daemon
from tests.utils import run_daemon

TOKEN = "cli-test-token-0123456789"

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  drain_grace: 1s
  api:
    tokens:
      - name: ops
        token: {token}
        scope: write
checks:
  health:
    type: http
    url: {url}/health
    interval: 100ms
    timeout: 1s
rules:
  down:
    when: health.up < 1
    do: [fix]
  errors:
    when: {{alert: HighErrorRate}}
    do: [fix]
remediations:
  fix:
    type: http
    url: {url}/hook
    body: {{step: fix}}
"""


@asynccontextmanager
async def cli_daemon(directory: Path, app_url: str) -> AsyncIterator[Daemon]:
    """The daemon running in-process, its config and state in `directory`."""
    path = directory / "runbookd.yaml"
    path.write_text(CONFIG.format(state=directory / "state", url=app_url, token=TOKEN))
    async with run_daemon(path) as running:
        yield running
