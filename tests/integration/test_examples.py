"""config/examples/ and config/procedures/ run with `runbookd once` against the demo
application: every check that reads the application (`http`, `scrape` at APP_URL) is OK, and
a bad deploy shows in the error ratio the scrape measures between its two scrapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli.demo.app import DemoApp
from daemon.cli.once import OnceExit, run_once
from daemon.config.document import RunbookConfig
from daemon.config.loader import load_config
from tests.examples import CONFIGS, EXAMPLES, write_credentials
from tests.utils import PauseClock, requests_to, serve

ON_THE_APP = [p for p in CONFIGS if "${APP_URL" in p.read_text()]


def app_checks(config: RunbookConfig, app_url: str) -> list[str]:
    return [
        name
        for name, check in config.checks.items()
        if check.type in ("http", "scrape") and str(getattr(check, "url", "")).startswith(app_url)
    ]


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(write_credentials(tmp_path / "credentials")))


@pytest.mark.parametrize("example", ON_THE_APP, ids=lambda p: f"{p.parent.name}/{p.stem}")
@pytest.mark.usefixtures("credentials")
async def test_once_runs_the_examples_app_checks_against_the_demo_app(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = DemoApp()
    async with serve(demo.app) as url:
        monkeypatch.setenv("APP_URL", url)
        config = load_config(example)
        names = app_checks(config, url)
        assert names, f"{example.name} reads nothing at APP_URL"
        await requests_to(url, 5)()
        lines: list[str] = []
        clock = PauseClock(requests_to(url, 100))
        assert await run_once(config, names, lines.append, clock) is OnceExit.OK, lines
    statuses = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert statuses == dict.fromkeys(names, "OK")


@pytest.mark.usefixtures("credentials")
async def test_a_bad_deploy_shows_in_the_compose_examples_error_ratio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    demo = DemoApp()
    demo.versions.append("v2-bad")  # every fifth request fails
    async with serve(demo.app) as url:
        monkeypatch.setenv("APP_URL", url)
        config = load_config(next(p for p in EXAMPLES if p.stem == "docker-compose"))
        await requests_to(url, 5)()
        lines: list[str] = []
        clock = PauseClock(requests_to(url, 100))
        assert await run_once(config, ["traffic"], lines.append, clock) is OnceExit.OK
    assert clock.slept == [5.0]  # its interval is 15s: the pause stops at 5s
    assert {"error_ratio=0.2", "requests=100"} <= set(lines[1].split())
