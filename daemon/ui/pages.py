"""The console's handlers: login and logout, the overview, an incident and its report, the
forms that act on it, the live parts the script polls, and the static files.

A page without a session sends the browser to the login form; a form without a session, with
a CSRF token not of its session, from another origin, or from a `read` session is refused
with 403 and the reason, and does nothing."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy
from pydantic import ValidationError
from yarl import URL

from daemon.api.acts import answer
from daemon.api.auth import GRANTS, TokenTable
from daemon.api.bodies import problem
from daemon.api.port import DaemonView
from daemon.api.routes import Handler
from daemon.api.schemas import Who
from daemon.core.models import Step
from daemon.ui import rendering, report, views
from daemon.ui.approvals import ApprovalPages
from daemon.ui.checks import CheckPages
from daemon.ui.deploys import DeployPages
from daemon.ui.jobs import JobPages
from daemon.ui.procedures import ProcedurePages
from daemon.ui.responses import NO_STORE, SECURITY_HEADERS, etag_of, see_other
from daemon.ui.sessions import COOKIE, Session, Sessions, same_csrf
from daemon.ui.silences import SilencePages
from daemon.ui.status import StatusPages

LOGIN = "/ui/login"
LIVE = "live"  # the query parameter asking for a page's live part
# What a form's button asks, as the API's act and its arguments.
INCIDENT_ACTS: dict[str, tuple[str, dict[str, Any]]] = {
    "acknowledge": ("acknowledge", {}),
    "resolve": ("resolve", {}),
    "approve": ("decide", {"approved": True}),
    "reject": ("decide", {"approved": False}),
}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_STATIC_NAME = re.compile(r"^[a-z]+\.(js|css|svg)$")
_RETURN = re.compile(r"/ui/[A-Za-z0-9._~%/?&=:+-]{0,500}")


def return_to(path: str) -> str:
    """Where the login form sends the browser after it: a page of this console, or the
    overview; never another site (`//evil.example`, `/\\evil.example`) nor the form again."""
    if _RETURN.fullmatch(path) and "//" not in path and not path.startswith(LOGIN):
        return path
    return "/ui/"


def is_tls(request: web.Request) -> bool:
    """Served over TLS, here or at a proxy in front (a client faking the header only
    withholds its own cookie from plain HTTP)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def same_origin(request: web.Request) -> bool:
    """A form from this console: a browser names the origin of every POST; one from another
    site is refused even before its CSRF token is looked at."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin.split("://", 1)[-1] == request.host


class Console:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.sessions = Sessions()
        self.static = {
            name: resources.files("daemon.ui").joinpath("static", name).read_bytes()
            for name in ("console.js", "console.css", "icon.svg")
        }

    # -- access --------------------------------------------------------------------------------

    @property
    def _settings(self) -> Any:
        return self.daemon.config.runbookd.api

    def session(self, request: web.Request) -> Session | None:
        tokens = self._settings.tokens
        return self.sessions.get(request.cookies.get(COOKIE), tokens, now=self.daemon.clock.now())

    def viewer(self, request: web.Request) -> Session:
        session = self.session(request)
        if session is None and LIVE in request.query:
            raise web.HTTPUnauthorized(reason="no session (expired?): log in again")
        if session is None:  # to the login form, and back here after it
            here = request.path_qs
            raise web.HTTPSeeOther(URL(LOGIN).with_query(next=here) if here != "/ui/" else LOGIN)
        return session

    def page(
        self, request: web.Request, template: str, context: dict[str, Any], status: int = 200
    ) -> web.Response:
        """A page. A viewer's page is live: the script polls its address with `?live` and gets
        its main block again (the overview and an incident have live parts of their own)."""
        session: Session | None = context.get("session")
        live = session is not None and status == 200 and "live_url" not in context
        role = self.daemon.role()
        # Steps waiting for a person, in the navigation: the leader's own (a standby has none).
        waiting = len(self.daemon.operations.pending_approvals()) if session is not None else 0
        base = {
            "role": role,
            "waiting": waiting if role != "standby" else 0,
            "session": session,
            "can_act": session is not None and "write" in GRANTS[session.scope],
            "now": self.daemon.clock.now(),
            "flash": "",
            "flash_ok": True,
            "page_live_url": str(request.rel_url.update_query({LIVE: ""})) if live else "",
        }
        if live and LIVE in request.query:
            return self._live(request, rendering.block(template, "main", base | context))
        if session is not None and session.flash:
            base["flash"], base["flash_ok"] = session.flash, session.flash_ok
            session.flash = ""
        response = rendering.html(template, base | context, status)
        response.headers.update(SECURITY_HEADERS | NO_STORE)
        return response

    def refused(self, request: web.Request, status: int, reason: str) -> web.Response:
        session = self.session(request)
        context = {"reason": reason, "status": status, "session": session}
        if session is None:  # log in, and back to the page the person was on
            back = return_to(URL(request.headers.get("Referer", "")).path_qs)
            context["login"] = str(URL(LOGIN).with_query(next=back)) if back != "/ui/" else LOGIN
        return self.page(request, "error.html", context, status)

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        self.viewer(request)  # who has no session learns nothing of what exists
        return self.refused(request, 404, f"no page {request.path!r}")

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        after = return_to(request.query.get("next", ""))
        if self.session(request) is not None:
            raise web.HTTPSeeOther(after)
        context = {"open_api": not self._settings.tokens, "next": after}
        return self.page(request, "login.html", context)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not same_origin(request):
            return self.refused(request, 403, "this form was sent from another site")
        form = await request.post()
        after = return_to(str(form.get("next", "")))
        settings = self._settings
        token = None
        if settings.tokens:
            presented = str(form.get("token", "")).strip()
            token = TokenTable(settings.tokens).identify(presented) if presented else None
            if token is None:
                context = {"open_api": False, "error": "invalid token", "next": after}
                return self.page(request, "login.html", context, 401)
            if "read" not in GRANTS[token.scope]:
                reason = f"token {token.name!r} has scope {token.scope}: the console needs read"
                return self.refused(request, 403, reason)
        session = self.sessions.create(token, now=self.daemon.clock.now(), ttl=settings.session_ttl)
        response = see_other(after)
        response.set_cookie(
            COOKIE,
            session.id,
            max_age=int(settings.session_ttl),
            path="/ui",
            httponly=True,
            samesite="Strict",
            secure=is_tls(request),
        )
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        got = await self.form(request, need_write=False)
        if isinstance(got, web.Response):
            return got
        session, _ = got
        self.sessions.end(session.id)
        response = see_other(LOGIN)
        response.del_cookie(COOKIE, path="/ui")
        return response

    async def form(
        self, request: web.Request, *, need_write: bool
    ) -> tuple[Session, MultiDictProxy[str | bytes | bytearray | FileField]] | web.Response:
        """The session a form comes from and its fields, or the refusal."""
        if not same_origin(request):
            return self.refused(request, 403, "this form was sent from another site")
        session = self.session(request)
        if session is None:
            reason = (
                "your session has ended (it expired, or runbookd restarted): nothing was done. "
                "Log in again, then send the form again."
            )
            return self.refused(request, 403, reason)
        form = await request.post()
        if not same_csrf(session, str(form.get("csrf", ""))):
            return self.refused(request, 403, "this form's CSRF token is not this session's")
        if need_write and "write" not in GRANTS[session.scope]:
            reason = f"token {session.name!r} has scope {session.scope}; acting needs write"
            return self.refused(request, 403, reason)
        return session, form

    # -- pages ---------------------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.StreamResponse:
        return see_other("/ui/")

    async def overview(self, request: web.Request) -> web.StreamResponse:
        session = self.viewer(request)
        live = await self._overview_live(session)
        return self.page(request, "overview.html", {"session": session} | live)

    async def overview_live(self, request: web.Request) -> web.StreamResponse:
        session = self._live_viewer(request)
        return self._live(request, (await self._overview_live(session))["live_html"])

    async def _overview_live(self, session: Session) -> dict[str, Any]:
        data = await views.overview(self.daemon)
        html = self._fragment("_overview_live.html", {"o": data, "now": self.daemon.clock.now()})
        return {"live_html": html, "live_etag": etag_of(html), "live_url": "/ui/live.json"}

    async def incident(self, request: web.Request) -> web.StreamResponse:
        session = self.viewer(request)
        live = await self._incident_live(session, request.match_info["id"])
        if live is None:
            return self.refused(request, 404, f"no incident {request.match_info['id']!r}")
        return self.page(request, "incident.html", {"session": session} | live)

    async def incident_live(self, request: web.Request) -> web.StreamResponse:
        session = self._live_viewer(request)
        live = await self._incident_live(session, request.match_info["id"])
        if live is None:
            raise web.HTTPNotFound(reason=f"no incident {request.match_info['id']!r}")
        return self._live(request, live["live_html"])

    async def _incident_live(self, session: Session, incident_id: str) -> dict[str, Any] | None:
        incident = await self.daemon.store.get_incident(incident_id)
        if incident is None:
            return None
        waiting = await views.waiting_step(self.daemon, incident_id) if incident.is_open else None
        context = {
            "incident": incident,
            "waiting": waiting,
            "session": session,
            "can_act": "write" in GRANTS[session.scope],
            "now": self.daemon.clock.now(),
            "steps": Step,
        }
        html = self._fragment("_incident_live.html", context)
        url = f"/ui/incidents/{incident_id}/live.json"
        return {
            "incident": incident,
            "live_html": html,
            "live_etag": etag_of(html),
            "live_url": url,
            "report": report.render(incident, now=self.daemon.clock.now()),
        }

    async def report(self, request: web.Request) -> web.StreamResponse:
        self.viewer(request)
        incident = await self.daemon.store.get_incident(request.match_info["id"])
        if incident is None:
            return self.refused(request, 404, f"no incident {request.match_info['id']!r}")
        text = report.render(incident, now=self.daemon.clock.now())
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", incident.id)[:100]
        headers = SECURITY_HEADERS | NO_STORE
        headers["Content-Disposition"] = f'attachment; filename="incident-{safe}.md"'
        return web.Response(text=text, content_type="text/markdown", headers=headers)

    async def act(self, request: web.Request) -> web.StreamResponse:
        incident_id, action = request.match_info["id"], request.match_info["action"]
        if action not in INCIDENT_ACTS:
            return self.refused(request, 404, f"no action {action!r}")
        got = await self.form(request, need_write=True)
        if isinstance(got, web.Response):
            return got
        session, form = got
        try:
            who = Who(by=session.name, reason=str(form.get("reason", "")).strip())
        except ValidationError as exc:
            return self.refused(request, 400, problem(exc))
        name, extra = INCIDENT_ACTS[action]
        args = {"incident": incident_id, "by": who.by, "reason": who.reason} | extra
        session.tell(await answer(self.daemon, name, args), f"{action}: done")
        return see_other(f"/ui/incidents/{incident_id}")

    # -- live parts and files ------------------------------------------------------------------

    def _live_viewer(self, request: web.Request) -> Session:
        session = self.session(request)
        if session is None:  # the script reloads the page, which goes to the login form
            raise web.HTTPUnauthorized(reason="no session (expired?): log in again")
        return session

    def _fragment(self, template: str, context: dict[str, Any]) -> str:
        return rendering.render(template, context)

    def _live(self, request: web.Request, html: str) -> web.Response:
        tag = etag_of(html)
        headers = SECURITY_HEADERS | NO_STORE | {"ETag": tag}
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers=headers)
        body = json.dumps({"html": html})
        return web.Response(text=body, content_type="application/json", headers=headers)

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = self.static.get(name) if _STATIC_NAME.match(name) else None
        if body is None:
            raise web.HTTPNotFound(reason=f"no file {name!r}")
        tag = etag_of(body.decode())
        headers = SECURITY_HEADERS | {"ETag": tag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers=headers)
        suffix = name[name.rindex(".") :]
        return web.Response(body=body, content_type=STATIC_TYPES[suffix], headers=headers)

    def handlers(self) -> dict[str, Handler]:
        return (
            {
                "uiRoot": self.root,
                "uiOverview": self.overview,
                "uiOverviewLive": self.overview_live,
                "uiLoginForm": self.login_form,
                "uiLogin": self.login,
                "uiLogout": self.logout,
                "uiIncident": self.incident,
                "uiIncidentLive": self.incident_live,
                "uiReport": self.report,
                "uiIncidentAct": self.act,
                "uiStatic": self.static_file,
                "uiNotFound": self.not_found,
            }
            | CheckPages(self).handlers()
            | ApprovalPages(self).handlers()
            | SilencePages(self).handlers()
            | ProcedurePages(self).handlers()
            | JobPages(self).handlers()
            | DeployPages(self).handlers()
            | status_handlers(self.daemon)
        )


def console_handlers(daemon: DaemonView) -> dict[str, Handler]:
    """The console's handlers, by operation id (routes.UI_OPERATIONS)."""
    return Console(daemon).handlers()


def status_handlers(daemon: DaemonView) -> dict[str, Handler]:
    pages = StatusPages(daemon)
    return {"statusPage": pages.page, "statusFeed": pages.feed}
