"""Console sessions: an API token exchanged at login for a random session id in a cookie.

In memory, bounded: a restart logs everyone out (the token logs them in again). A session
keeps a digest of its token, never the token, and its scope is the token's scope of the moment:
a token a reload removed (or made `intake`) ends its sessions, a token demoted to `read` loses
its buttons. With no token configured (an open API, which the loader allows only on loopback)
anyone who reaches the console may act, as anyone may call the API; it still takes a session,
so that the cookie's SameSite rule and the CSRF token keep other web sites from acting through
a browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from daemon.api.auth import GRANTS
from daemon.api.port import Answer
from daemon.config.settings import ApiToken, Scope

COOKIE = "runbookd_session"
# The name a console user acts as when the API is open (no tokens).
LOCAL = "local"
MAX_SESSIONS = 10_000


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(slots=True)
class Session:
    id: str
    csrf: str
    name: str
    token: bytes | None  # the token's digest; None: logged in while the API was open
    expires_at: float
    # What the last action came to, shown once on the next page.
    flash: str = ""
    flash_ok: bool = True
    scope: Scope = field(default="read")
    # What a refused form held, by field: filled in again until the next one is sent.
    draft: dict[str, str] = field(default_factory=dict)

    def tell(self, got: Answer, done: str) -> None:
        """What an act came to, for the next page: `done`, or the act's refusal as it gave it."""
        self.flash_ok = got.status < 400
        self.flash = done if self.flash_ok else str(got.body.get("error"))


class Sessions:
    """The sessions going on, oldest first; at MAX_SESSIONS the oldest ends."""

    def __init__(self) -> None:
        self._by_id: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def create(self, token: ApiToken | None, *, now: float, ttl: float) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            name=token.name if token else LOCAL,
            token=digest(token.token.get_secret_value()) if token else None,
            expires_at=now + ttl,
            scope=token.scope if token else "write",
        )
        self._by_id[digest(session.id)] = session
        while len(self._by_id) > MAX_SESSIONS:
            del self._by_id[next(iter(self._by_id))]
        return session

    def get(
        self, session_id: str | None, tokens: Sequence[ApiToken], *, now: float
    ) -> Session | None:
        """The live session with this id, its scope refreshed from `tokens` (the config of
        the moment); None if there is none, it expired, or its token is gone or may no longer
        read."""
        if not session_id:
            return None
        key = digest(session_id)
        session = self._by_id.get(key)
        if session is None:
            return None
        scope = current_scope(session, tokens)
        # A token a reload gave the `intake` scope may no longer read the console: ended.
        if session.expires_at <= now or scope is None or "read" not in GRANTS[scope]:
            del self._by_id[key]
            return None
        session.scope = scope
        return session

    def end(self, session_id: str) -> None:
        self._by_id.pop(digest(session_id), None)


def current_scope(session: Session, tokens: Sequence[ApiToken]) -> Scope | None:
    if session.token is None:  # open API: only while it stays open
        return None if tokens else "write"
    scope: Scope | None = None
    for token in tokens:  # every token compared: no early exit
        if hmac.compare_digest(digest(token.token.get_secret_value()), session.token):
            scope = token.scope
    return scope


def same_csrf(session: Session, presented: str) -> bool:
    return hmac.compare_digest(digest(presented), digest(session.csrf))
