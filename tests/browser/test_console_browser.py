"""The console in a real browser (Chromium): log in with a token, watch an incident appear
live when a check fails, approve its waiting step and see the timeline follow, download the
report; a read token sees no buttons and its forged POST is refused; pages read with
JavaScript off. Screenshots of the main pages are saved (see conftest.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.integration.test_console import READ, WRITE, write_config
from tests.utils import run_daemon, wait_for


async def log_in(context: Any, url: str, token: str) -> Any:
    page = await context.new_page()
    await page.goto(f"{url}/ui/")
    assert page.url.endswith("/ui/login")  # no session: the login form
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{url}/ui/")
    return page


async def test_an_incident_appears_live_is_approved_and_its_report_downloads(
    tmp_path: Path, app_state: tuple[dict[str, object], str], browser: Any, screenshots: Path
) -> None:
    started = time.monotonic()
    state, app_url = app_state
    async with run_daemon(write_config(tmp_path, app_url)) as daemon:
        url = f"http://127.0.0.1:{daemon.port}"
        page = await log_in(browser, url, WRITE)
        await page.wait_for_selector("text=No open incident.")
        await page.evaluate("window.sameDocument = true")  # gone if the page reloads
        state["up"] = False  # the check turns critical: the rule fires
        row = await page.wait_for_selector("table.incidents a", timeout=10_000)
        assert await page.evaluate("window.sameDocument === true")  # it came live
        assert await page.is_visible("text=health.up < 1")
        await page.screenshot(path=screenshots / "overview.png", full_page=True)

        await row.click()
        await page.wait_for_selector("#waiting")
        incident_id = page.url.rsplit("/", 1)[1]
        await page.fill("form[action$='/approve'] input[name=reason]", "checked the dashboard")
        await page.click("form[action$='/approve'] button")
        await page.wait_for_selector("text=approve: done")
        await page.wait_for_selector("text=notify approved by ops: checked the dashboard")
        await page.evaluate("window.sameDocument = true")
        await wait_for(lambda: bool(state.get("hooks")))
        # The step's result reaches the timeline without a reload.
        await page.wait_for_selector("#timeline li.kind-result", timeout=10_000)
        assert await page.evaluate("window.sameDocument === true")
        await page.screenshot(path=screenshots / "incident.png", full_page=True)

        public = await browser.new_page()  # the status page, as the public sees it
        await public.goto(f"{url}/status")
        assert await public.inner_text("#overall") == "Some systems are down"
        assert "health" not in await public.inner_text("body")
        await public.screenshot(path=screenshots / "status.png", full_page=True)

        async with page.expect_download() as info:
            await page.click("#report-download")
        download = await info.value
        assert download.suggested_filename == f"incident-{incident_id}.md"
        report = Path(await download.path()).read_text()
        assert "## What happened" in report
        assert "approved by ops" in report
    assert time.monotonic() - started < 40


async def test_a_read_token_sees_no_buttons_and_its_forged_post_is_refused(
    tmp_path: Path, app_state: tuple[dict[str, object], str], browser: Any, screenshots: Path
) -> None:
    state, app_url = app_state
    async with run_daemon(write_config(tmp_path, app_url)) as daemon:
        url = f"http://127.0.0.1:{daemon.port}"
        state["up"] = False
        await wait_for(lambda: bool(daemon.pipeline.approvals.pending))
        incident_id = next(iter(daemon.pipeline.approvals.pending.values())).incident_id
        page = await log_in(browser, url, READ)
        await page.goto(f"{url}/ui/incidents/{incident_id}")
        await page.wait_for_selector("#waiting")
        assert await page.locator("form.act").count() == 0
        assert await page.locator("main button").count() == 0
        await page.screenshot(path=screenshots / "incident-read.png", full_page=True)
        forged = await page.evaluate(
            """async ([path, csrf]) => {
                const body = new URLSearchParams({csrf: csrf, reason: "forged"});
                const r = await fetch(path, {method: "POST", body: body});
                return [r.status, await r.text()];
            }""",
            [
                f"/ui/incidents/{incident_id}/approve",
                await page.get_attribute("header input[name=csrf]", "value"),
            ],
        )
        assert forged[0] == 403
        assert "has scope read; acting needs write" in forged[1]
        assert daemon.pipeline.approvals.pending  # nothing was decided


async def test_pages_read_with_javascript_off(
    tmp_path: Path, app_state: tuple[dict[str, object], str], browser: Any, screenshots: Path
) -> None:
    state, app_url = app_state
    async with run_daemon(write_config(tmp_path, app_url)) as daemon:
        url = f"http://127.0.0.1:{daemon.port}"
        state["up"] = False
        await wait_for(lambda: bool(daemon.engine.incidents))
        # A second context of the same browser, with JavaScript off.
        context = await browser.browser.new_context(java_script_enabled=False)
        try:
            page = await log_in(context, url, WRITE)
            await page.wait_for_selector("table.incidents a")
            await page.screenshot(path=screenshots / "overview-no-js.png", full_page=True)
            await page.click("table.incidents a")
            await page.wait_for_selector("#timeline li.kind-opened")
            await page.wait_for_selector("text=Incident report")
            assert await page.evaluate("1 + 1") == 2  # Playwright's own evaluation still runs
        finally:
            await context.close()
