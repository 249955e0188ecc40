"""The console's silences and maintenance windows: the list, a form to create one (a rule or a
check, for a duration or until a time), a button to end one now. The same validation and the
same acts as POST /api/v1/silences and DELETE /api/v1/silences/{id}."""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from daemon.api.acts import answer
from daemon.api.bodies import problem
from daemon.api.operator import silence_from
from daemon.api.routes import Handler
from daemon.api.schemas import SilenceBody
from daemon.ui.responses import see_other

if TYPE_CHECKING:
    from daemon.ui.pages import Console

PAGE = "/ui/silences"


_INCIDENT_PAGE = re.compile(r"^/ui/incidents/[A-Za-z0-9._:-]{1,200}$")
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


def utc_field(value: str) -> str:
    """A browser's zone-less date and time, read as UTC; anything else as typed (the model
    says what is wrong with it)."""
    return value + "Z" if _LOCAL_TIME.match(value) else value


# The form's words for the API's fields, as the refusal names them.
LABELS = {
    "rule": "Rule",
    "check": "Check",
    "duration": "For",
    "starts_at": "From (UTC)",
    "comment": "Comment",
}


def in_form_words(reason: str, fields: dict[str, str]) -> str:
    """A refusal as the person who filled the form reads it: its labels, not the API's
    fields ("ends_at: ..." is about "For" when no end was picked)."""
    if reason.startswith("body: a silence needs a matcher"):
        return "Pick a rule or a check to silence."
    field, sep, rest = reason.partition(": ")
    if not sep:
        return reason
    if field == "ends_at":
        label = "or until (UTC)" if fields["ends_at"] else "For"
        return f"{label}: {rest.replace('after starts_at', 'after its start')}"
    return f"{LABELS[field]}: {rest}" if field in LABELS else reason


class SilencePages:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.daemon = console.daemon

    def handlers(self) -> dict[str, Handler]:
        return {
            "uiSilences": self.listing,
            "uiSilenceCreate": self.create,
            "uiSilenceExpire": self.expire,
        }

    async def listing(self, request: web.Request) -> web.StreamResponse:
        session = self.console.viewer(request)
        got = await answer(self.daemon, "listSilences", {"expired": False})
        silences: list[dict[str, Any]] = got.body.get("silences", []) if got.status == 200 else []
        rules = sorted(self.daemon.config.rules)
        checks = sorted(self.daemon.config.checks)
        context = {
            "session": session,
            "silences": sorted(silences, key=lambda s: s["starts_at"]),
            "error": "" if got.status == 200 else str(got.body.get("error")),
            "rules": rules,
            "checks": checks,
            "draft": session.draft,
        }
        return self.console.page(request, "silences.html", context)

    async def create(self, request: web.Request) -> web.StreamResponse:
        got = await self.console.form(request, need_write=True)
        if isinstance(got, web.Response):
            return got
        session, form = got
        keys = ("rule", "check", "duration", "comment", "starts_at", "ends_at")
        fields = {key: str(form.get(key, "")).strip() for key in keys}
        session.draft = dict(fields)  # kept for the form again if it is refused
        # A maintenance window: a start and an end picked in the browser, in UTC as every time
        # the console shows (an <input type=datetime-local> sends no zone).
        for key in ("starts_at", "ends_at"):
            if fields[key]:
                fields[key] = utc_field(fields[key])
        if fields["ends_at"]:
            fields["duration"] = ""  # "until" wins over the default duration
        body: dict[str, Any] = {k: v for k, v in fields.items() if v}
        try:
            silence = silence_from(
                SilenceBody.model_validate(body | {"created_by": session.name}),
                self.daemon.clock.now(),
            )
        except ValidationError as exc:
            silence = problem(exc)
        if isinstance(silence, str):
            session.flash, session.flash_ok = in_form_words(silence, fields), False
        else:
            done = await answer(self.daemon, "createSilence", {"silence": asdict(silence)})
            session.tell(done, f"silence {silence.id} created")
            if session.flash_ok:
                session.draft = {}
            else:
                session.flash = in_form_words(session.flash, fields)
        # From an incident's page ("silence its rule"), back to it; never anywhere else.
        back = str(form.get("back", ""))
        return see_other(back if _INCIDENT_PAGE.match(back) else PAGE)

    async def expire(self, request: web.Request) -> web.StreamResponse:
        got = await self.console.form(request, need_write=True)
        if isinstance(got, web.Response):
            return got
        session, _ = got
        silence_id = request.match_info["id"]
        done = await answer(self.daemon, "expireSilence", {"silence": silence_id})
        session.tell(done, f"silence {silence_id} ended")
        return see_other(PAGE)
