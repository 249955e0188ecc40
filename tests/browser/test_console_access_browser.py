"""The console's access and its forms in a real browser (Chromium): a silence created and
ended; a session that expires sends the open page back to the login form and its forms are
refused; a page of another origin on the same host (same site, so the browser sends the
SameSite=Strict cookie) posting to the console is refused and does nothing; an open page that
says when the daemon stops answering; the approvals page showing a new step live; the public
status page going degraded, then operational again."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from daemon.config.loader import load_config
from daemon.core.clock import SystemClock
from daemon.runtime.daemon import Daemon
from tests.browser.test_console_browser import log_in
from tests.integration.test_console import WRITE, write_config
from tests.utils import run_daemon, serve, wait_for

TTL = 12 * 3600.0  # runbookd.api.session_ttl's default


class ShiftedClock(SystemClock):
    """The system clock, `shift` seconds ahead: a session's expiry without waiting for it."""

    shift = 0.0

    def now(self) -> float:
        return time.time() + self.shift


@asynccontextmanager
async def shifted_daemon(config: Path) -> AsyncIterator[tuple[Daemon, ShiftedClock]]:
    clock = ShiftedClock()
    daemon = Daemon(load_config(config), config_path=config, clock=clock)
    await daemon.start()
    try:
        yield daemon, clock
    finally:
        await daemon.stop()


async def test_a_silence_is_created_and_ended(
    tmp_path: Path, app_state: tuple[dict[str, object], str], browser: Any, screenshots: Path
) -> None:
    async with run_daemon(write_config(tmp_path, app_state[1])) as daemon:
        url = f"http://127.0.0.1:{daemon.port}"
        page = await log_in(browser, url, WRITE)
        await page.click("nav a[href='/ui/silences']")
        await page.wait_for_selector("text=No silence.")
        await page.select_option("form.silence select[name=rule]", "down")
        await page.fill("form.silence input[name=duration]", "2h")
        await page.fill("form.silence input[name=comment]", "database failover drill")
        await page.click("form.silence button[type=submit]")
        row = page.locator("#silences tbody tr", has_text="database failover drill")
        await row.wait_for()
        assert "rule down" in await row.inner_text()
        assert len(daemon.pipeline.silences.list(daemon.clock.now())) == 1
        await page.screenshot(path=screenshots / "silences.png", full_page=True)

        await row.locator("button", has_text="End now").click()
        await page.wait_for_selector("text=No silence.")
        assert daemon.pipeline.silences.list(daemon.clock.now()) == []


async def test_an_expired_session_goes_back_to_login_and_its_forms_are_refused(
    tmp_path: Path, app_state: tuple[dict[str, object], str], browser: Any
) -> None:
    async with shifted_daemon(write_config(tmp_path, app_state[1])) as (daemon, clock):
        url = f"http://127.0.0.1:{daemon.port}"
        page = await log_in(browser, url, WRITE)
        csrf = await page.get_attribute("header input[name=csrf]", "value")
        clock.shift = TTL  # twelve hours on
        # The open overview's next poll is refused (401): the script reloads the page, which
        # goes to the login form, without anyone touching it.
        await page.wait_for_url(f"{url}/ui/login", timeout=10_000)
        refused = await page.evaluate(
            """async ([csrf]) => {
                const body = new URLSearchParams({csrf: csrf, rule: "down", duration: "1h",
                                                  comment: "after expiry"});
                const r = await fetch("/ui/silences", {method: "POST", body: body});
                return [r.status, await r.text()];
            }""",
            [csrf],
        )
        assert refused[0] == 403
        assert "your session has ended (it expired, or runbookd restarted)" in refused[1]
        assert daemon.pipeline.silences.list(daemon.clock.now()) == []
        page = await log_in(browser, url, WRITE)  # logging in again works
        assert await page.is_visible("text=Open incidents")


async def test_an_open_page_says_when_the_daemon_stops_answering(
    tmp_path: Path, app_state: tuple[dict[str, object], str], browser: Any
) -> None:
    async with run_daemon(write_config(tmp_path, app_state[1])) as daemon:
        url = f"http://127.0.0.1:{daemon.port}"
        page = await log_in(browser, url, WRITE)
        assert not await page.is_visible("p.stale")
        # The daemon unreachable: its live part's polls fail as a refused connection does.
        await page.route("**/ui/live.json*", lambda route: route.abort("connectionrefused"))
        banner = page.locator("p.stale")
        await banner.wait_for(timeout=10_000)
        assert "runbookd is not answering" in await banner.inner_text()
        assert await page.is_visible("text=Open incidents")  # what it knew stays shown
        await page.unroute("**/ui/live.json*")
        await banner.wait_for(state="detached", timeout=10_000)


async def test_the_approvals_page_shows_a_new_waiting_step_without_a_reload(
    tmp_path: Path, app_state: tuple[dict[str, object], str], browser: Any
) -> None:
    state, app_url = app_state
    async with run_daemon(write_config(tmp_path, app_url)) as daemon:
        page = await log_in(browser, f"http://127.0.0.1:{daemon.port}", WRITE)
        await page.click("nav a[href='/ui/approvals']")
        await page.wait_for_selector("text=Nothing is waiting for a person.")
        await page.evaluate("window.sameDocument = true")  # gone if the page reloads
        state["up"] = False  # the rule fires; its step waits for a person
        await page.wait_for_selector("#approvals strong:text('notify')", timeout=10_000)
        assert await page.evaluate("window.sameDocument === true")
        await page.fill("#approvals form[action$='/approve'] input[name=reason]", "seen it")
        await page.click("#approvals form[action$='/approve'] button")
        await page.wait_for_selector("text=approve: done")
        await wait_for(lambda: not daemon.pipeline.approvals.pending)


async def test_a_form_from_another_origin_on_the_same_host_is_refused(
    tmp_path: Path, app_state: tuple[dict[str, object], str], browser: Any
) -> None:
    state, app_url = app_state
    async with run_daemon(write_config(tmp_path, app_url)) as daemon:
        url = f"http://127.0.0.1:{daemon.port}"
        state["up"] = False
        await wait_for(lambda: bool(daemon.pipeline.approvals.pending))
        incident_id = next(iter(daemon.pipeline.approvals.pending.values())).incident_id
        page = await log_in(browser, url, WRITE)
        csrf = await page.get_attribute("header input[name=csrf]", "value")

        # Another origin (another port of 127.0.0.1: the same site, so the browser sends the
        # console's SameSite=Strict cookie) with a form that posts to the console at once;
        # it even knows the CSRF token, as a leaked one would be.
        async def attack(request: web.Request) -> web.Response:
            return web.Response(
                text=f"""<!doctype html><form id=f method=post
                  action="{url}/ui/incidents/{incident_id}/approve">
                  <input name=csrf value="{csrf}"><input name=reason value=forged></form>
                  <script>document.getElementById("f").submit()</script>""",
                content_type="text/html",
            )

        other = web.Application()
        other.router.add_get("/", attack)
        async with serve(other) as attacker:
            evil = await browser.new_page()
            await evil.goto(attacker)
            await evil.wait_for_url(f"{url}/ui/incidents/{incident_id}/approve")
            body = await evil.inner_text("body")
        assert "this form was sent from another site" in body
        assert daemon.pipeline.approvals.pending  # nothing was approved


async def test_the_status_page_goes_degraded_then_operational(
    tmp_path: Path, app_state: tuple[dict[str, object], str], browser: Any, screenshots: Path
) -> None:
    state, app_url = app_state
    async with run_daemon(write_config(tmp_path, app_url)) as daemon:
        url = f"http://127.0.0.1:{daemon.port}"
        await wait_for(lambda: daemon.scheduler.first_round.is_set())
        public = await browser.new_page()
        await public.goto(f"{url}/status")
        assert await public.inner_text("#overall") == "All systems operational"

        state["up"] = False
        await wait_for(lambda: bool(daemon.engine.incidents))
        await public.reload()
        assert await public.inner_text("#overall") == "Some systems are down"
        assert await public.locator("section.update").count() == 1
        await public.screenshot(path=screenshots / "status-outage.png", full_page=True)

        state["up"] = True
        await wait_for(lambda: not daemon.engine.incidents)
        await public.reload()
        assert await public.inner_text("#overall") == "All systems operational"
        assert await public.locator("section.update").count() == 0
        # The history keeps the incident's story: resolved, (its updates,) investigating.
        (past,) = await public.locator("ul.history > li").all()
        told = await past.locator("ul.updates li").all_inner_texts()
        assert [t.split(" · ", 1)[1] for t in told] == [
            "Resolved: This incident is resolved.",
            "Investigating: We are looking into it.",
        ]
        await public.screenshot(path=screenshots / "status-history.png", full_page=True)
        assert "health" not in await public.inner_text("body")  # no check names, ever
