"""Many checks on a real daemon: the API's checks listing (trouble first, paged, filtered,
with each check's recent values), the overview showing the first few in trouble order with
their plots, and the checks page paging through the rest. Also: the console's modules load
on first use only."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from daemon.runtime.daemon import Daemon
from daemon.ui.views import OVERVIEW_CHECKS
from tests.integration.test_console import base, logged_in, page
from tests.utils import run_daemon, wait_for

READ = "r-checks-0123456789-read"
HEALTHY = 40
FAILING = 3


def config(directory: Path, url: str) -> Path:
    checks = "".join(
        f"  web_{i:02d}:\n    type: http\n    url: {url}/health\n    interval: 100ms\n"
        for i in range(HEALTHY)
    )
    checks += "".join(
        f"  gone_{i}:\n    type: http\n    url: {url}/missing\n    interval: 100ms\n"
        for i in range(FAILING)
    )
    path = directory / "runbookd.yaml"
    path.write_text(
        f"runbookd:\n  listen: 127.0.0.1:0\n  state_dir: {directory / 'state'}\n"
        f"  api:\n    tokens:\n      - {{name: viewer, token: {READ}, scope: read}}\n"
        f"checks:\n{checks}"
        "rules:\n  web_slow:\n    when: web_00.latency_seconds > 5\n"
    )
    return path


@pytest.fixture
async def daemon(tmp_path: Path, app_state: tuple[dict[str, object], str]) -> AsyncIterator[Daemon]:
    async with run_daemon(config(tmp_path, app_state[1])) as d:
        # Every check has run a few times: each has a status and a few recent values.
        await wait_for(lambda: all(len(d.observed.recent(n)) >= 3 for n in d.config.checks))
        yield d


async def api(daemon: Daemon, query: str) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {READ}"}
    async with (
        aiohttp.ClientSession(headers=headers) as client,
        client.get(f"{base(daemon)}/api/v1/checks{query}") as r,
    ):
        return r.status, await r.json()


async def test_the_api_lists_trouble_first_a_page_at_a_time_with_counts(daemon: Daemon) -> None:
    status, body = await api(daemon, "?order=trouble&limit=5&history=true")
    assert status == 200
    checks = body["checks"]
    assert isinstance(checks, list)
    assert [c["name"] for c in checks] == ["gone_0", "gone_1", "gone_2", "web_00", "web_01"]
    assert [c["status"] for c in checks[:3]] == ["critical"] * 3
    assert body["total"] == HEALTHY + FAILING
    assert body["counts"] == {"critical": 3, "warn": 0, "unknown": 0, "none": 0, "ok": HEALTHY}
    # web_00's rule watches its latency; a check no rule watches plots its runs' duration.
    assert [c["plotted"] for c in checks[2:]] == ["duration", "latency_seconds", "duration"]
    assert len(checks[3]["recent"]) >= 3
    assert all(isinstance(v, float) for v in checks[3]["recent"])

    status, body = await api(daemon, "?status=ok&match=web_3&offset=2")
    assert status == 200
    assert [c["name"] for c in body["checks"]] == [f"web_3{i}" for i in range(2, 10)]
    assert body["total"] == 10
    assert "recent" not in body["checks"][0]  # only when asked: 30 numbers a check

    status, body = await api(daemon, "")  # as before: every check, by name
    assert [c["name"] for c in body["checks"]][:2] == ["gone_0", "gone_1"]
    assert len(body["checks"]) == HEALTHY + FAILING


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?status=broken", "status"),
        ("?order=random", "order"),
        ("?limit=0", "limit"),
        ("?offset=-1", "offset"),
        ("?limit=many", "limit"),
        ("?history=yes", "history"),
        ("?match=" + "x" * 201, "match"),
    ],
)
async def test_a_bad_query_is_refused_naming_its_field(
    daemon: Daemon, query: str, field: str
) -> None:
    status, body = await api(daemon, query)
    assert status == 400
    assert str(body["error"]).startswith(f"{field}:")


async def test_the_overview_shows_trouble_first_with_plots_and_links_the_rest(
    daemon: Daemon,
) -> None:
    async with logged_in(daemon, READ) as client:
        _, html = await page(client, f"{base(daemon)}/ui/")
    rows = re.findall(r"<tr>\s*<td>((?:gone|web)_\d+)</td>", html)
    assert rows[:FAILING] == ["gone_0", "gone_1", "gone_2"]
    assert len(rows) == OVERVIEW_CHECKS
    assert f'<a href="/ui/checks">All {HEALTHY + FAILING} checks</a>' in html
    assert '<span class="badge status-critical">3 critical</span>' in html
    assert html.count('<svg class="spark"') == OVERVIEW_CHECKS
    assert "<polyline points=" in html


async def test_the_checks_page_pages_and_filters(daemon: Daemon) -> None:
    async with logged_in(daemon, READ) as client:
        url = f"{base(daemon)}/ui/checks?order=trouble&match=web_"
        status, html = await page(client, url)
        assert status == 200
        names = re.findall(r"<tr>\s*<td>((?:gone|web)_\d+)</td>", html)
        assert names == [f"web_{i:02d}" for i in range(HEALTHY)]  # one page holds them
        assert 'rel="next"' not in html
        assert "1–40 of 40" in html

        status, html = await page(client, f"{base(daemon)}/ui/checks?status=critical")
        assert re.findall(r"<tr>\s*<td>((?:gone|web)_\d+)</td>", html) == [
            f"gone_{i}" for i in range(FAILING)
        ]
        status, html = await page(client, f"{base(daemon)}/ui/checks?status=nonsense")
        assert status == 400
        assert "status: must be one of" in html


def test_the_console_and_jinja2_load_on_first_use_only() -> None:
    """A daemon nobody browses does not carry the console's modules (about 4 MB)."""
    probe = (
        "import sys, daemon.cli.main, daemon.runtime.daemon, daemon.api.app;"
        "print(sorted(m for m in sys.modules if m.startswith(('jinja2', 'daemon.ui'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
