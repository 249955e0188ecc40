"""The jobs and deploys pages in a real browser (Chromium): a job run now from its button, a
restore drill's report opened, a deploy rolled back and one completed with their verdicts and
timelines. Screenshots of each page are saved (see conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from remediations.drill_report import TableCount
from tests.browser.test_console_browser import log_in
from tests.integration.test_console import WRITE
from tests.integration.test_console_jobs_deploys import announce, drill_run, running, status_of
from tests.utils import wait_for, wait_until

# A drill that passed, as restore_drill records one.
T = 1_700_000_000.0
PASSED: dict[str, Any] = {
    "outcome": "succeeded",
    "detail": "restored s3://backups/db/2024.dump (50.0 MiB) into a scratch database in 38s "
    "(RTO 15m): sha256 abababababab… matches the manifest, 3 tables counted, 1 check passed",
    "finished_at": T + 50,
    "format": "custom",
    "backup_taken_at": T - 7200,
    "backup_age_seconds": 7200.0,
    "within_rpo": True,
    "downloaded_bytes": 52_428_800,
    "restored_bytes": 52_428_800,
    "scratch_database": "runbookd_drill_20231114_221320",
    "dropped": True,
    "restore_seconds": 38.2,
    "verify_seconds": 4.3,
    "row_counts": [
        TableCount("users", 1200, 1200, ok=True),
        TableCount("tasks", 48_210, 48_210, ok=True),
        TableCount("audit_log", 912_004, 912_004, ok=True),
    ],
    "failures": [],
}


async def test_jobs_and_deploys_pages_read_and_act_in_a_browser(
    tmp_path: Path, app_state: tuple[dict[str, object], str], browser: Any, screenshots: Path
) -> None:
    async with running(tmp_path, *app_state) as setup, aiohttp.ClientSession() as client:
        daemon = setup.daemon
        await drill_run(daemon, **PASSED)
        page = await log_in(browser, setup.url, WRITE)

        await page.click("header nav >> text=Jobs")
        await page.wait_for_url(f"{setup.url}/ui/jobs")
        await page.click("form[action='/ui/jobs/nightly_backup/run'] button")
        await page.wait_for_selector("text=started a run of nightly_backup")
        await wait_for(lambda: daemon.jobs.jobs["nightly_backup"].running)
        await page.click("form[action='/ui/jobs/nightly_backup/run'] button")
        await page.wait_for_selector("text=a run of job 'nightly_backup' is going on")
        setup.gate.touch()
        await wait_for(lambda: not daemon.jobs.jobs["nightly_backup"].running)
        await page.goto(f"{setup.url}/ui/jobs")
        await page.wait_for_selector("#jobs .outcome-succeeded")
        await page.screenshot(path=screenshots / "jobs.png", full_page=True)

        await page.click("#jobs >> text=restore_drill")
        report = page.locator("section.run-report details").first
        assert await report.get_attribute("open") is not None  # the newest, opened
        assert await page.is_visible("text=sha256 abababababab… matches the manifest")
        await page.screenshot(path=screenshots / "job-drill.png", full_page=True)

        good = await announce(client, setup, version="v1.4.0", commit="4f2a9c1d", by="ana")
        await wait_for(lambda: daemon.deploys.watch is None, within=10)
        bad = await announce(client, setup, version="v1.4.1", commit="b7e01c55", by="ci")
        await wait_for(lambda: daemon.deploys.watch is not None)
        setup.state["up"] = False

        async def rolled_back() -> bool:
            return await status_of(daemon, bad) == "rolled_back"

        await wait_until(rolled_back, "the deploy rolled back", within=10)
        setup.state["up"] = True
        await page.click("header nav >> text=Deploys")
        await page.wait_for_selector(f"a[href='/ui/deploys/{good}']")
        assert await page.is_visible("#deploys .deploy-rolled_back")
        assert await page.is_visible("text=critical endpoint health failing (up 0)")
        await page.screenshot(path=screenshots / "deploys.png", full_page=True)

        await page.click(f"a[href='/ui/deploys/{bad}']")
        await page.wait_for_selector("#timeline li.kind-rolled_back")
        assert await page.is_visible("#verdict >> text=rolled back")
        assert await page.is_visible("text=Starting deployment of v1.4.1")
        await page.screenshot(path=screenshots / "deploy.png", full_page=True)
