"""The console (/ui/) on a real daemon on loopback: login and its cookie, sessions, CSRF,
scopes, escaping, the live parts' ETags, actions through the API's acts, and the report."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from daemon.core.models import Incident, Step, TimelineEntry
from daemon.runtime.daemon import Daemon
from tests.utils import run_daemon, wait_for

WRITE = "w-console-0123456789-write"
READ = "r-console-0123456789-read"
INTAKE = "i-console-0123456789-intake"

CONFIG = """\
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  api:
    tokens:
{tokens}
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
    body: {{approved: true}}
    require_approval: true
    approval_timeout: 1m
status_page:
  title: Example status
  components:
    - {{name: The application, checks: [health]}}
"""
TOKENS = f"""\
      - {{name: ops, token: {WRITE}, scope: write}}
      - {{name: viewer, token: {READ}, scope: read}}
      - {{name: am, token: {INTAKE}, scope: intake}}
"""


def write_config(directory: Path, url: str, tokens: str = TOKENS) -> Path:
    path = directory / "runbookd.yaml"
    text = CONFIG.format(state=directory / "state", url=url, tokens=tokens)
    if not tokens:
        text = text.replace("  api:\n    tokens:\n", "")
    path.write_text(text)
    return path


@pytest.fixture
async def daemon(tmp_path: Path, app_state: tuple[dict[str, object], str]) -> AsyncIterator[Daemon]:
    async with run_daemon(write_config(tmp_path, app_state[1])) as d:
        yield d


def base(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.port}"


@asynccontextmanager
async def logged_in(daemon: Daemon, token: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A browser-like client (it keeps cookies for 127.0.0.1) with a session."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        async with client.post(f"{base(daemon)}/ui/login", data={"token": token}) as r:
            assert r.status == 200, await r.text()  # followed the 303 to the overview
            assert r.url.path == "/ui/"
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found[1]


async def page(client: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with client.get(url, allow_redirects=False) as r:
        return r.status, await r.text()


# -- access -------------------------------------------------------------------------------------


async def test_login_sets_a_strict_httponly_expiring_cookie(daemon: Daemon) -> None:
    async with aiohttp.ClientSession() as client:
        url = f"{base(daemon)}/ui/login"
        async with client.post(url, data={"token": WRITE}, allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/ui/")
            cookie = SimpleCookie(r.headers["Set-Cookie"])["runbookd_session"]
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
        assert cookie["path"] == "/ui"
        assert cookie["max-age"] == str(12 * 3600)
        assert not cookie["secure"]  # plain HTTP: a Secure cookie would never come back
        headers = {"X-Forwarded-Proto": "https"}
        async with client.post(
            url, data={"token": WRITE}, headers=headers, allow_redirects=False
        ) as r:
            assert SimpleCookie(r.headers["Set-Cookie"])["runbookd_session"]["secure"] is True


async def test_without_a_session_pages_go_to_login_and_live_parts_are_401(daemon: Daemon) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{base(daemon)}/ui/", allow_redirects=False) as r:
            assert r.headers["Location"] == "/ui/login"
        async with client.get(f"{base(daemon)}/ui", allow_redirects=False) as r:
            assert r.headers["Location"] == "/ui/"
        async with client.get(f"{base(daemon)}/ui/live.json") as r:
            assert r.status == 401
            assert "log in" in (await r.json())["error"]
        status, html = await page(client, f"{base(daemon)}/ui/login")
        assert status == 200
        assert 'name="token"' in html


async def test_login_returns_to_the_page_asked_for_and_only_to_this_console(
    daemon: Daemon,
) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        wanted = f"{base(daemon)}/ui/checks?status=critical&match=db"
        async with client.get(wanted) as r:  # to the login form, which knows where to return
            assert r.url.path == "/ui/login"
            assert r.url.query["next"] == "/ui/checks?status=critical&match=db"
            html = await r.text()
            assert 'name="next" value="/ui/checks?status=critical&amp;match=db"' in html
            # Said why: after an expiry or a restart, the page just asked for a login.
            assert "Log in to go on to <code>/ui/checks?status=critical&amp;match=db</code>" in html
            login = r.url
        async with client.post(login, data={"token": READ, "next": r.url.query["next"]}) as r:
            assert r.status == 200
            assert str(r.url) == wanted
    for elsewhere in (
        "//evil.example/ui/",
        "https://evil.example/",
        "/ui//evil.example",
        "/ui/login",
    ):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            form = {"token": READ, "next": elsewhere}
            async with client.post(
                f"{base(daemon)}/ui/login", data=form, allow_redirects=False
            ) as r:
                assert r.status == 303
                assert r.headers["Location"] == "/ui/"


async def test_an_unknown_console_address_is_a_page_with_the_console_around_it(
    daemon: Daemon,
) -> None:
    # No session: to the login form first.
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{base(daemon)}/ui/nowhere", allow_redirects=False) as r,
    ):
        assert r.status == 303
        assert r.headers["Location"] == "/ui/login?next=/ui/nowhere"
    async with logged_in(daemon, READ) as client:
        for url in ("/ui/nowhere", "/ui/incidents/none-such"):
            status, html = await page(client, base(daemon) + url)
            assert status == 404
            assert html.startswith("<!doctype html>")
            assert '<a href="/ui/checks">Checks</a>' in html  # the console's navigation
            assert "Log in" not in html
        async with client.get(f"{base(daemon)}/ui/static/icon.svg") as r:
            assert r.status == 200
            assert r.content_type == "image/svg+xml"


async def test_a_wrong_token_or_an_intake_token_gets_no_session(daemon: Daemon) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        async with client.post(f"{base(daemon)}/ui/login", data={"token": WRITE + "x"}) as r:
            assert r.status == 401
            assert "invalid token" in await r.text()
        async with client.post(f"{base(daemon)}/ui/login", data={"token": INTAKE}) as r:
            assert r.status == 403
            assert "scope intake: the console needs read" in await r.text()
        assert len(client.cookie_jar) == 0
        assert (await page(client, f"{base(daemon)}/ui/"))[0] == 303


async def test_pages_forbid_inline_script_and_caching(daemon: Daemon) -> None:
    async with logged_in(daemon, READ) as client:
        async with client.get(f"{base(daemon)}/ui/") as r:
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp
            assert "unsafe-inline" not in csp
            assert r.headers["Cache-Control"] == "no-store"
            html = await r.text()
        assert "<script>" not in html
        assert " style=" not in html
        assert '<script src="/ui/static/console.js" defer>' in html
        async with client.get(f"{base(daemon)}/ui/static/console.js") as r:
            assert r.content_type == "text/javascript"
            assert len(await r.read()) < 50 * 1024
        async with client.get(f"{base(daemon)}/ui/static/..%2Fpages.py") as r:
            assert r.status == 404


async def test_a_token_revoked_by_a_reload_is_refused_by_the_api_and_the_console(
    tmp_path: Path, app_state: tuple[dict[str, object], str]
) -> None:
    config = write_config(tmp_path, app_state[1])
    async with run_daemon(config) as daemon, logged_in(daemon, READ) as browser:
        incidents = f"{base(daemon)}/api/v1/incidents"
        async with aiohttp.ClientSession() as api:
            async with api.get(incidents, headers={"Authorization": f"Bearer {READ}"}) as r:
                assert r.status == 200
            # The viewer's token leaked: it is taken out of the config, and a new one added.
            new_read = "r-console-0123456789-fresh"
            tokens = TOKENS.replace(READ, new_read)
            config.write_text(
                CONFIG.format(state=tmp_path / "state", url=app_state[1], tokens=tokens)
            )
            assert await daemon.reload()
            async with api.get(incidents, headers={"Authorization": f"Bearer {READ}"}) as r:
                assert r.status == 401
                assert (await r.json())["error"] == "invalid token"
            async with api.get(incidents, headers={"Authorization": f"Bearer {new_read}"}) as r:
                assert r.status == 200
        status, _ = await page(browser, f"{base(daemon)}/ui/")
        assert status == 303  # the leaked token's session ended with it


async def test_logout_ends_the_session(daemon: Daemon) -> None:
    async with logged_in(daemon, READ) as client:
        _, html = await page(client, f"{base(daemon)}/ui/")
        async with client.post(f"{base(daemon)}/ui/logout", data={"csrf": csrf_of(html)}) as r:
            assert r.url.path == "/ui/login"
        assert (await page(client, f"{base(daemon)}/ui/"))[0] == 303


async def test_with_no_token_configured_the_console_opens_as_the_api_does(
    tmp_path: Path, app_state: tuple[dict[str, object], str]
) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        run_daemon(write_config(tmp_path, app_state[1], tokens="")) as d,
        aiohttp.ClientSession(cookie_jar=jar) as client,
    ):
        status, html = await page(client, f"{base(d)}/ui/login")
        assert status == 200
        assert 'name="token"' not in html
        assert "Open the console" in html
        async with client.post(f"{base(d)}/ui/login") as r:
            assert r.url.path == "/ui/"
            html = await r.text()
        assert "local" in html
        assert "scope-write" in html


# -- acting -------------------------------------------------------------------------------------


async def waiting_incident(daemon: Daemon, state: dict[str, object]) -> str:
    state["up"] = False
    await wait_for(lambda: bool(daemon.pipeline.approvals.pending))
    return next(iter(daemon.pipeline.approvals.pending.values())).incident_id


async def test_a_read_session_sees_no_buttons_and_its_forged_post_is_refused(
    daemon: Daemon, app_state: tuple[dict[str, object], str]
) -> None:
    incident_id = await waiting_incident(daemon, app_state[0])
    async with logged_in(daemon, READ) as client:
        status, html = await page(client, f"{base(daemon)}/ui/incidents/{incident_id}")
        assert status == 200
        assert "waits for approval" in html
        # Said as a person acts on it: where, how long, and the command.
        assert (
            "waiting for approval to run notify (http) for 1m: approve or reject it on the "
            f"incident&#39;s page in the console, or `runbookd incidents approve {incident_id}`"
        ) in html
        assert f'action="/ui/incidents/{incident_id}/' not in html
        assert html.count("<button") == 1  # log out, and nothing else
        assert "you see, a <code>write</code> token acts" in html
        csrf = csrf_of(html)  # the logout form's: a read session has one too
        url = f"{base(daemon)}/ui/incidents/{incident_id}/approve"
        async with client.post(url, data={"csrf": csrf, "reason": "me"}) as r:
            assert r.status == 403
            assert "token &#39;viewer&#39; has scope read; acting needs write" in await r.text()
    assert daemon.pipeline.approvals.pending  # nothing was decided


async def test_a_form_sent_after_the_session_ended_says_so_and_leads_back_to_its_page(
    daemon: Daemon,
) -> None:
    url = f"{base(daemon)}/ui/incidents/inc-x/acknowledge"
    back = f"{base(daemon)}/ui/incidents/inc-x"
    headers = {"Referer": back}
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.post(url, data={"note": "on it"}, headers=headers) as r,
    ):
        assert r.status == 403
        html = await r.text()
    assert "your session has ended (it expired, or runbookd restarted): nothing was done" in html
    assert '<a href="/ui/login?next=/ui/incidents/inc-x">Log in</a>' in html


async def test_a_form_without_its_sessions_csrf_token_or_from_elsewhere_is_refused(
    daemon: Daemon, app_state: tuple[dict[str, object], str]
) -> None:
    incident_id = await waiting_incident(daemon, app_state[0])
    async with logged_in(daemon, WRITE) as client, logged_in(daemon, WRITE) as other:
        _, html = await page(client, f"{base(daemon)}/ui/incidents/{incident_id}")
        _, other_html = await page(other, f"{base(daemon)}/ui/incidents/{incident_id}")
        url = f"{base(daemon)}/ui/incidents/{incident_id}/approve"
        for data, headers, reason in [
            ({}, {}, "CSRF token is not this session"),
            ({"csrf": csrf_of(other_html)}, {}, "CSRF token is not this session"),
            ({"csrf": csrf_of(html)}, {"Origin": "http://evil.example"}, "from another site"),
        ]:
            async with client.post(url, data=data, headers=headers) as r:
                assert r.status == 403
                assert reason in await r.text()
        async with (
            aiohttp.ClientSession() as stranger,  # no session at all
            stranger.post(url, data={"csrf": csrf_of(html)}) as r,
        ):
            assert r.status == 403
    assert daemon.pipeline.approvals.pending


async def test_approving_through_the_console_runs_the_step_and_the_live_part_changes(
    daemon: Daemon, app_state: tuple[dict[str, object], str]
) -> None:
    state = app_state[0]
    incident_id = await waiting_incident(daemon, state)
    async with logged_in(daemon, WRITE) as client:
        live = f"{base(daemon)}/ui/incidents/{incident_id}/live.json"
        async with client.get(live) as r:
            assert r.status == 200
            etag = r.headers["ETag"]
            assert "Approve notify" in (await r.json())["html"]
        async with client.get(live, headers={"If-None-Match": etag}) as r:
            assert r.status == 304
            assert await r.read() == b""
        _, html = await page(client, f"{base(daemon)}/ui/incidents/{incident_id}")
        data = {"csrf": csrf_of(html), "reason": "checked the dashboard"}
        url = f"{base(daemon)}/ui/incidents/{incident_id}/approve"
        async with client.post(url, data=data) as r:
            assert r.url.path == f"/ui/incidents/{incident_id}"
            html = await r.text()
        assert "approve: done" in html
        assert "notify approved by ops: checked the dashboard" in html
        await wait_for(lambda: bool(state.get("hooks")))
        async with client.get(live, headers={"If-None-Match": etag}) as r:
            assert r.status == 200
            assert "Approve notify" not in (await r.json())["html"]


async def test_the_approvals_page_lists_waiting_steps_and_decides_them(
    daemon: Daemon, app_state: tuple[dict[str, object], str]
) -> None:
    async with logged_in(daemon, READ) as client:
        _, html = await page(client, f"{base(daemon)}/ui/approvals")
        assert "Nothing is waiting for a person." in html
    incident_id = await waiting_incident(daemon, app_state[0])
    async with logged_in(daemon, READ) as client:
        _, html = await page(client, f"{base(daemon)}/ui/approvals")
        assert f'<a href="/ui/incidents/{incident_id}">down: down: health.up' in html
        assert "<strong>notify</strong>" in html
        assert "approve" not in html  # a read session: no forms
    async with logged_in(daemon, WRITE) as client:
        _, html = await page(client, f"{base(daemon)}/ui/approvals")
        form = {"csrf": csrf_of(html), "reason": "from the approvals page"}
        url = f"{base(daemon)}/ui/incidents/{incident_id}/approve"
        async with client.post(url, data=form) as r:
            assert "approve: done" in await r.text()
        await wait_for(lambda: not daemon.pipeline.approvals.pending)
        _, html = await page(client, f"{base(daemon)}/ui/approvals")
        assert "Nothing is waiting for a person." in html


async def test_every_viewers_page_is_live_its_main_part_polled_with_an_etag(
    daemon: Daemon, app_state: tuple[dict[str, object], str]
) -> None:
    async with logged_in(daemon, READ) as client:
        status, html = await page(client, f"{base(daemon)}/ui/approvals")
        assert '<div id="live" data-live="/ui/approvals?live=" data-etag="">' in html
        live = f"{base(daemon)}/ui/approvals?live="
        async with client.get(live) as r:
            assert r.status == 200
            before, tag = (await r.json())["html"], r.headers["ETag"]
        assert "Nothing is waiting for a person." in before
        assert "<header" not in before  # the main part alone
        async with client.get(live, headers={"If-None-Match": tag}) as r:
            assert r.status == 304
        incident_id = await waiting_incident(daemon, app_state[0])
        async with client.get(live, headers={"If-None-Match": tag}) as r:
            assert r.status == 200
            assert f'href="/ui/incidents/{incident_id}"' in (await r.json())["html"]
        for url in ("/ui/silences", "/ui/checks?order=trouble", "/ui/jobs", "/ui/deploys"):
            status, html = await page(client, base(daemon) + url)
            assert status == 200
            assert 'data-live="' + url.replace("&", "&amp;") in html
        status, html = await page(client, f"{base(daemon)}/ui/nowhere")
        assert status == 404
        assert "data-live" not in html  # a refusal is not polled
    async with aiohttp.ClientSession() as anonymous, anonymous.get(live) as r:
        assert r.status == 401  # the script reloads the page, which goes to the login form


async def test_acknowledge_and_resolve_say_what_they_came_to(
    daemon: Daemon, app_state: tuple[dict[str, object], str]
) -> None:
    incident_id = await waiting_incident(daemon, app_state[0])
    async with logged_in(daemon, WRITE) as client:
        _, html = await page(client, f"{base(daemon)}/ui/incidents/{incident_id}")
        csrf = csrf_of(html)
        url = f"{base(daemon)}/ui/incidents/{incident_id}"
        async with client.post(f"{url}/acknowledge", data={"csrf": csrf, "reason": "on it"}) as r:
            html = await r.text()
        assert "acknowledge: done" in html
        assert "acknowledged by ops: on it" in html
        async with client.post(f"{url}/acknowledge", data={"csrf": csrf}) as r:
            assert "is already acknowledged" in await r.text()
        async with client.post(f"{url}/resolve", data={"csrf": csrf, "reason": "fixed"}) as r:
            html = await r.text()
        assert "resolve: done" in html
        assert 'id="incident-status">resolved<' in html
        assert "/resolve" not in html  # a closed incident has no buttons
        async with client.post(f"{url}/explode", data={"csrf": csrf}) as r:
            assert r.status == 404


# -- what pages show ----------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>'


async def test_markup_in_a_summary_or_a_timeline_is_shown_as_text(daemon: Daemon) -> None:
    now = daemon.clock.now()
    incident = Incident(
        id="evil-1",
        rule="down",
        check="health",
        severity="critical",
        summary=HOSTILE,
        opened_at=now,
        trigger={"value": 0.0, "threshold": 1.0},
    )
    await daemon.store.create_incident(incident)
    entry = TimelineEntry(now, Step.OPENED, '<img src=x onerror="alert(1)">', {"k": HOSTILE})
    await daemon.store.append_timeline(incident.id, entry)
    async with logged_in(daemon, READ) as client:
        for url in ("/ui/", "/ui/incidents/evil-1"):
            status, html = await page(client, base(daemon) + url)
            assert status == 200
            assert HOSTILE not in html
            assert "<img src=x" not in html
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
        async with client.get(f"{base(daemon)}/ui/live.json") as r:
            assert HOSTILE not in (await r.json())["html"]


async def test_controls_and_direction_overrides_are_shown_as_escapes(daemon: Daemon) -> None:
    # "\u202e" would show "evil.exe" as "exe.live"; ESC and BEL would vanish from the page.
    tricky = "db\u202eexe.live\x1b[31m\x07 fine"
    now = daemon.clock.now()
    incident = Incident(
        id="tricky-1",
        rule="down",
        check="health",
        severity="critical",
        summary=tricky,
        opened_at=now,
        trigger={"value": 0.0, "threshold": 1.0},
    )
    await daemon.store.create_incident(incident)
    async with logged_in(daemon, READ) as client:
        for url in ("/ui/", "/ui/incidents/tricky-1"):
            status, html = await page(client, base(daemon) + url)
            assert status == 200
            assert not {"\u202e", "\x1b", "\x07"} & set(html)
            assert "db\\u202eexe.live\\x1b[31m\\x07 fine" in html


async def test_the_timeline_and_the_report_show_values_alike_with_units(daemon: Daemon) -> None:
    now = daemon.clock.now()
    incident = Incident(
        id="slow-1",
        rule="slow",
        check="api",
        severity="warning",
        summary="slow",
        opened_at=now,
        trigger={
            "value_name": "p95_seconds",
            "value": 1.8,
            "threshold": 1.5,
            "baseline": None,
            "for_seconds": 300.0,
        },
    )
    await daemon.store.create_incident(incident)
    entries = [
        TimelineEntry(now + 1, Step.RESULT, "restart: ok", {"ok": True, "exit_code": 0}),
        TimelineEntry(now + 2, Step.ALERT, "joined", {"labels": {"team": "ops", "page": False}}),
        TimelineEntry(now + 3, Step.RESOLVED, "resolved", {"value": 0.91234567, "limit": 1.5}),
    ]
    for entry in entries:
        await daemon.store.append_timeline(incident.id, entry)
    shown = [
        "value=1.8s",  # the trigger's numbers in the unit of the value the rule watched
        "threshold=1.5s",
        "baseline=—",
        "for_seconds=5m",
        "ok=yes",
        "exit_code=0",
        "labels=team: ops, page: no",
        "value=912.3ms",  # the resolution's too
        "limit=1.5s",
    ]
    async with logged_in(daemon, READ) as client:
        _, html = await page(client, f"{base(daemon)}/ui/incidents/slow-1")
        async with client.get(f"{base(daemon)}/ui/incidents/slow-1/report.md") as r:
            text = await r.text()
    live = html.split('id="live"')[1].split('class="report"')[0]
    for said in shown:
        assert f'<span class="kv">{said}</span>' in live, said
        assert said in text, said
    for repr_ in ("None", "True", "False", "{'", "0.91234567"):
        assert repr_ not in live, repr_
        assert repr_ not in text, repr_


async def test_the_overview_lists_incidents_checks_and_rules(
    daemon: Daemon, app_state: tuple[dict[str, object], str]
) -> None:
    async with logged_in(daemon, READ) as client:
        _, html = await page(client, f"{base(daemon)}/ui/")
        assert '<a href="/ui/approvals">Approvals</a>' in html  # nothing waits
        incident_id = await waiting_incident(daemon, app_state[0])
        _, html = await page(client, f"{base(daemon)}/ui/")
    assert 'Approvals <span class="badge" title="steps waiting for a person">1</span>' in html
    assert f'href="/ui/incidents/{incident_id}"' in html
    assert 'Open incidents <span class="count">1</span>' in html
    assert "status-critical" in html
    assert "up=0" in html
    assert "status_code=503" in html
    assert re.search(r"latency_seconds=[0-9.]+ms<", html)  # a check's values in their units
    assert "health.up &lt; 1" in html
    assert "state-firing" in html


async def test_the_report_downloads_as_markdown_from_the_timeline(
    daemon: Daemon, app_state: tuple[dict[str, object], str]
) -> None:
    incident_id = await waiting_incident(daemon, app_state[0])
    async with logged_in(daemon, READ) as client:
        async with client.get(f"{base(daemon)}/ui/incidents/{incident_id}/report.md") as r:
            assert r.status == 200
            assert r.content_type == "text/markdown"
            assert r.headers["Content-Disposition"].startswith('attachment; filename="incident-')
            text = await r.text()
        for heading in ("What happened", "Impact", "Timeline", "Actions", "What was verified"):
            assert f"## {heading}" in text
        assert "waiting for approval" in text or "waits for approval" in text
        _status, html = await page(client, f"{base(daemon)}/ui/incidents/{incident_id}")
        assert "## Follow-ups" in html  # shown on the page too
        assert (await page(client, f"{base(daemon)}/ui/incidents/nope"))[0] == 404
    assert URL(f"{base(daemon)}/ui/").path == "/ui/"


# -- silences -----------------------------------------------------------------------------------


async def test_a_silence_is_created_listed_and_ended_through_the_console(daemon: Daemon) -> None:
    async with logged_in(daemon, WRITE) as client:
        _, html = await page(client, f"{base(daemon)}/ui/silences")
        assert "No silence." in html
        csrf = csrf_of(html)
        form = {"csrf": csrf, "rule": "down", "duration": "2h", "comment": "db migration"}
        async with client.post(f"{base(daemon)}/ui/silences", data=form) as r:
            html = await r.text()
        assert r.url.path == "/ui/silences"
        assert "silence " in html
        assert "created" in html
        assert "db migration" in html
        (silence,) = daemon.pipeline.silences.list(daemon.clock.now())
        assert (silence.rule, silence.created_by) == ("down", "ops")
        assert silence.ends_at - silence.starts_at == 7200
        bad = form | {"duration": "soon"}
        async with client.post(f"{base(daemon)}/ui/silences", data=bad) as r:
            assert "duration" in await r.text()
        async with client.post(
            f"{base(daemon)}/ui/silences", data=form | {"duration": "100d"}
        ) as r:
            assert "a silence lasts at most 90 days" in await r.text()
        url = f"{base(daemon)}/ui/silences/{silence.id}/expire"
        async with client.post(url, data={"csrf": csrf}) as r:
            html = await r.text()
        assert f"silence {silence.id} ended" in html
        assert "No silence." in html
        assert daemon.pipeline.silences.list(daemon.clock.now()) == []


async def test_a_refused_silence_says_why_in_the_forms_words_and_keeps_what_was_typed(
    daemon: Daemon,
) -> None:
    silences = f"{base(daemon)}/ui/silences"
    async with logged_in(daemon, WRITE) as client:
        _, html = await page(client, silences)
        form = {"csrf": csrf_of(html), "rule": "down", "duration": "0s", "comment": "db move"}
        for sent, said in [
            (form, "For: must be in the future and after its start"),
            (form | {"duration": "91d"}, "For: a silence lasts at most 90 days"),
            (form | {"duration": "soon"}, "For: not a duration: &#39;soon&#39;"),
            (form | {"rule": ""}, "Pick a rule or a check to silence."),
        ]:
            async with client.post(silences, data=sent) as r:
                html = await r.text()
            flash = re.search(r'<p class="flash bad" role="status">(.*?)</p>', html)
            assert flash is not None
            assert flash[1].startswith(said), flash[1]
            assert 'name="comment" maxlength="2000" required value="db move"' in html
            assert f'name="duration" value="{sent["duration"]}"' in html
        assert "<option selected>down</option>" not in html  # the last one picked no rule
        async with client.post(silences, data=form | {"duration": "2h"}) as r:
            html = await r.text()
        assert "created" in html
        assert 'required value=""' in html  # a silence created: the form is empty again
        assert 'name="duration" value="1h"' in html


async def test_an_incidents_rule_is_silenced_from_its_page_and_back_goes_only_there(
    daemon: Daemon, app_state: tuple[dict[str, object], str]
) -> None:
    incident_id = await waiting_incident(daemon, app_state[0])
    async with logged_in(daemon, WRITE) as client:
        _, html = await page(client, f"{base(daemon)}/ui/incidents/{incident_id}")
        assert 'id="silence-rule"' in html
        form = {
            "csrf": csrf_of(html),
            "rule": "down",
            "duration": "30m",
            "comment": "known: the database is being moved",
            "back": f"/ui/incidents/{incident_id}",
        }
        async with client.post(f"{base(daemon)}/ui/silences", data=form) as r:
            assert r.url.path == f"/ui/incidents/{incident_id}"
            assert "created" in await r.text()
        (silence,) = daemon.pipeline.silences.list(daemon.clock.now())
        assert (silence.rule, silence.ends_at - silence.starts_at) == ("down", 1800)
        for elsewhere in ("https://evil.example/", "//evil.example/ui/incidents/x", "/ui/../x"):
            async with client.post(
                f"{base(daemon)}/ui/silences", data=form | {"back": elsewhere}
            ) as r:
                assert r.url.path == "/ui/silences"
                assert r.url.host == "127.0.0.1"


async def test_a_maintenance_window_is_planned_in_utc_and_shows_as_coming(daemon: Daemon) -> None:
    def local(ts: float) -> str:  # what <input type=datetime-local> sends: no zone
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")

    start = (int(daemon.clock.now()) // 60 + 60) * 60  # on the minute, an hour on
    async with logged_in(daemon, WRITE) as client:
        _, html = await page(client, f"{base(daemon)}/ui/silences")
        form = {
            "csrf": csrf_of(html),
            "check": "health",
            "duration": "1h",  # the form's default: the end given wins over it
            "starts_at": local(start),
            "ends_at": local(start + 3 * 3600),
            "comment": "database upgrade",
        }
        async with client.post(f"{base(daemon)}/ui/silences", data=form) as r:
            html = await r.text()
        assert '<span class="badge">coming</span>' in html
        (window,) = daemon.pipeline.silences.list(daemon.clock.now())
        assert (window.starts_at, window.ends_at) == (start, start + 3 * 3600)
        assert not window.active(daemon.clock.now())
        backwards = form | {"ends_at": local(start - 3600)}
        async with client.post(f"{base(daemon)}/ui/silences", data=backwards) as r:
            assert "created" not in await r.text()
    assert len(daemon.pipeline.silences.list(daemon.clock.now())) == 1


async def test_a_read_session_lists_silences_but_cannot_create_or_end_them(daemon: Daemon) -> None:
    async with logged_in(daemon, READ) as client:
        _, html = await page(client, f"{base(daemon)}/ui/silences")
        assert 'action="/ui/silences"' not in html
        form = {"csrf": csrf_of(html), "rule": "down", "duration": "1h", "comment": "x"}
        async with client.post(f"{base(daemon)}/ui/silences", data=form) as r:
            assert r.status == 403
    assert daemon.pipeline.silences.list(daemon.clock.now()) == []
