"""`runbookd demo deploy`: the command run as a process goes through every step, keeps its
console up with `--stay` until Ctrl-C and exits 0; a rollback that does not happen makes it
exit 1 naming that step."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from daemon.cli.demo.deploy import DEPLOY_CONFIG, run_deploy_demo

ENVIRONMENT = ("DEMO_APP_URL", "DEMO_PAGER_URL", "DEMO_SLACK_URL", "RUNBOOKD_STATE_DIR")


async def test_demo_deploy_completes_a_good_deploy_and_rolls_back_a_bad_one() -> None:
    """Run as `runbookd demo deploy --stay`: the story, then the console stays up showing the
    deploys it recorded until SIGINT (Ctrl-C), which ends the demo with 0."""
    demo = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "daemon.cli", "demo", "deploy", "--stay"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert demo.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(90):
            while "the console stays up at " not in (
                line := (await demo.stdout.readline()).decode()
            ):
                assert line, "the demo ended before staying up:\n" + "".join(lines)
                lines.append(line)
            found = re.search(r"stays up at (\S+)", line)
            assert found is not None, line
            console = found[1]
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as client:
                login = console.replace("/ui/deploys", "/ui/login")
                async with client.post(login, data={"next": "/ui/deploys"}) as r:
                    assert (r.status, r.url.path) == (200, "/ui/deploys")  # no tokens: loopback
                    deploys = await r.text()
            assert "v3-bad" in deploys
            assert "rolled back" in deploys.lower() or "rolled_back" in deploys
            demo.send_signal(signal.SIGINT)
            rest, _ = await demo.communicate()
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
    assert demo.returncode == 0, "".join(lines) + rest.decode()
    out = "".join(lines)
    assert "console: http://127.0.0.1:" in out
    # The demo's own steps, each awaited before the next, and the channel's messages: each
    # list in the order it happened (the two interleave as the daemon's tasks run).
    steps = [
        "✓ baseline measured",
        "CI: POST /api/v1/deploys v2 -> ",
        "✓ v2's watch completed",
        "✓ v2 recorded as last known good",
        "CI: POST /api/v1/deploys v3-bad -> ",
        "(last known good: v2)",
        "✓ breach detected against the pre-deploy baseline",
        "✓ rolled back to v2",
        "✓ rollback announced: Rolled back to v2",
        "✓ incident resolved",
        "demo complete",
    ]
    channel = [
        "#deployments: Starting deployment of v2 to production at ",
        "#deployments: ✅ Deployment of v2 completed",
        "#deployments: Starting deployment of v3-bad to production at ",
        "#deployments: Rolled back to v2 due to ",
    ]
    for expected in (steps, channel):
        where = [out.find(step) for step in expected]
        assert -1 not in where, [s for s, at in zip(expected, where, strict=True) if at == -1]
        assert where == sorted(where), "out of order:\n" + out
    # The breach is measured against the baseline before v3-bad, and named in the rollback.
    assert re.search(r"Rolled back to v2 due to .*above .*\(.*baseline ", out)
    # The record, as the API stores it, and the time from the first failing check.
    assert re.search(r"GET /api/v1/deploys/dep-[0-9a-f-]+: rolled_back\n", out)
    failing = re.search(r"first failing check to rollback: ([0-9.]+)s", out)
    assert failing is not None
    # `for: 2s` plus at most a check interval (500ms), with room for a loaded machine.
    assert 2.0 <= float(failing.group(1)) <= 4.0
    seconds = [float(t) for t in re.findall(r"^\[\s*([0-9.]+)s\]", out, re.MULTILINE)]
    assert seconds[-1] < 30


async def test_demo_deploy_names_the_step_that_did_not_happen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollback endpoint is wrong: the breach is detected, the rollback fails (and is
    announced as not done); the demo exits 1 naming the rollback."""
    for name in ENVIRONMENT:  # restored after the test: the demo sets them for its servers
        monkeypatch.delenv(name, raising=False)
    text = DEPLOY_CONFIG.read_text(encoding="utf-8")
    broken = text.replace("/admin/rollback\n", "/admin/no-such-endpoint\n")
    assert broken != text
    config = tmp_path / "demo-deploy.yaml"
    config.write_text(broken, encoding="utf-8")
    lines: list[str] = []
    stayed: list[str] = []

    async def stay(console: str) -> None:
        stayed.append(console)

    assert await run_deploy_demo(config, out=lines.append, step_timeout=8.0, stay=stay) == 1
    assert stayed == []  # a failed story ends: nothing is left running
    out = "\n".join(lines)
    assert "✓ breach detected against the pre-deploy baseline" in out
    assert lines[-1].endswith("✗ demo failed: this step did not happen: rolled back to v2")
    assert "#deployments: ⚠️ Deployment of v3-bad broke: " in out
    assert "demo complete" not in out
