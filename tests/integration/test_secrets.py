"""No secret given to runbookd reaches the commands it runs: a `command` remediation gets its
own environment, never the daemon's."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.leaks import find_leaks, random_text
from tests.utils import run_daemon, wait_for

COMMAND_CONFIG = """
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
    do: [diagnostics]
remediations:
  page:                      # configured, so the key is runbookd's; never used here
    type: pagerduty
    routing_key: ${{PAGERDUTY_ROUTING_KEY}}
  diagnostics:               # what a command prints is recorded on the timeline
    type: command
    argv: [env]
"""


async def test_a_command_remediation_is_not_handed_the_daemons_secrets(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    app_state: tuple[dict[str, object], str],
    session: aiohttp.ClientSession,
) -> None:
    """A secret runbookd took from its environment (`${ENV}`, as the README shows) must not
    reach a command's environment, whose output the timeline records: a script that prints
    it (`env`, a `set -x` trace, a crash dump) would put the secret in the store and API."""
    key = random_text(32)
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", key)
    state, url = app_state
    config = tmp_path / "runbookd.yaml"
    config.write_text(COMMAND_CONFIG.format(state=tmp_path / "state", url=url))
    async with run_daemon(config) as daemon:
        await wait_for(lambda: daemon.scheduler.jobs["health"].runs > 0)
        state["up"] = False
        await wait_for(lambda: "down" in daemon.engine.incidents)
        incident = daemon.engine.incidents["down"]
        await wait_for(lambda: any(e.kind == "result" for e in incident.timeline))
        async with session.get(
            f"http://127.0.0.1:{daemon.port}/api/v1/incidents/{incident.id}"
        ) as r:
            answer = await r.read()
    (result,) = [e for e in incident.timeline if e.kind == "result"]
    assert "PATH=" in result.data["stdout"]  # the command ran and its output was recorded
    outputs = {f"GET /api/v1/incidents/{incident.id}": answer}
    outputs["state file runbookd.db"] = (tmp_path / "state" / "runbookd.db").read_bytes()
    leaks = find_leaks({"pagerduty_routing_key": key}, outputs)
    assert not leaks, "secrets leak:\n" + "\n".join(map(str, leaks))
