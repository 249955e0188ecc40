"""Who may call the API, how often, and with how large a body.

Bearer tokens with scopes (read, intake, write), compared in constant time; a token bucket
per caller; HMAC-SHA256 signatures for generic webhooks, each accepted once. Every /api/v1
route needs a token unless none is configured, which the config loader allows only on a loopback
address.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from daemon.api.routes import auth_of
from daemon.config.settings import ApiSettings, ApiToken, GrafanaSigning, RateLimitConfig, Scope

log = structlog.get_logger("runbookd.api")

CALLER = web.RequestKey("caller", str)


def acting(request: web.Request, by: str | None) -> str | None:
    """Who acts, as the timeline and the audit record it: the name the request gives, with
    the token that authenticated it when that token is someone else's (the record says who
    held the key, not only who was typed); the token's name when no name is given."""
    token = request.get(CALLER)
    if by is None or token is None or token == by:
        return by if by is not None else token
    return f"{by} (token {token})"


"""The name of the token a request came with; absent when the API is open (no tokens)."""

GRANTS: Mapping[Scope, frozenset[Scope]] = {
    "read": frozenset({"read"}),
    # An Alertmanager's token: it may push alerts and nothing else.
    "intake": frozenset({"intake"}),
    "write": frozenset({"read", "intake", "write"}),
}
REALM = 'Bearer realm="runbookd"'
TIMESTAMP_HEADER = "X-Runbookd-Timestamp"
SIGNATURE_HEADER = "X-Runbookd-Signature"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _digest(text: str) -> bytes:
    # Equal-length digests: compare_digest then leaks neither value nor length.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def same_secret(presented: str, expected: str) -> bool:
    """Constant time in the values and their lengths."""
    return hmac.compare_digest(_digest(presented), _digest(expected))


class TokenTable:
    """The configured API tokens, looked up in constant time."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._tokens = [(t, _digest(t.token.get_secret_value())) for t in tokens]

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def identify(self, presented: str) -> ApiToken | None:
        """The token `presented` is, or None. Compares with every token: no early exit."""
        digest = _digest(presented)
        found: ApiToken | None = None
        for token, expected in self._tokens:
            if hmac.compare_digest(digest, expected):
                found = token
        return found


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def route_of(request: web.Request) -> str:
    """The route template ("/api/v1/incidents/{id}"), never the raw path: a bounded label."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def required_scope(request: web.Request, *, protect_metrics: bool) -> Scope | None:
    """The scope the route table asks for. Deny by default: a request the table does not
    list (a 404, a 405) needs a token all the same."""
    match auth_of(request.method, route_of(request)):
        # A webhook checks its caller itself, with its secret; a console page, its session.
        case "open" | "webhook" | "vercel" | "session":
            return None
        case "metrics":
            return "read" if protect_metrics else None
        case "read" | "write" | "intake" as scope:
            return scope
        case None:
            return "read" if request.method in READ_METHODS else "write"


class RateLimiter:
    """A token bucket per key, in memory, on an injectable monotonic clock.

    At most `max_keys` buckets: the least recently used goes first, so a flood of new remote
    addresses costs bounded memory (an evicted key merely starts with a full bucket).
    """

    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.rate, self.burst = per_second, float(burst)
        self._monotonic = monotonic
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Spend one request: 0 when allowed, else the seconds until the next is."""
        now = self._monotonic()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # re-inserted last: dict order is recency
        if len(self._buckets) > self._max_keys:
            del self._buckets[next(iter(self._buckets))]
        return wait


def too_large(limit: int) -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(limit, 0, reason=f"body larger than {limit} bytes")


def unauthorized(reason: str, challenge: str = REALM) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(reason=reason, headers={"WWW-Authenticate": challenge})


@dataclass(slots=True)
class Guard:
    """In front of every route (app.py's middleware): rate limit, body size, bearer token."""

    configured: Callable[[], Sequence[ApiToken]]
    limiter: RateLimiter
    max_body: int
    protect_metrics: bool
    _table: TokenTable = field(default_factory=lambda: TokenTable(()))
    _source: Sequence[ApiToken] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: ApiSettings,
        monotonic: Callable[[], float] = time.monotonic,
        tokens: Callable[[], Sequence[ApiToken]] | None = None,
    ) -> Guard:
        """`tokens` gives the running config's tokens (they change on reload); by default
        the ones in `settings`."""
        rate = settings.rate_limit
        limiter = RateLimiter(rate.per_second, rate.burst, monotonic=monotonic)
        configured = tokens or (lambda: settings.tokens)
        return cls(configured, limiter, settings.max_body, settings.protect_metrics)

    @property
    def tokens(self) -> TokenTable:
        # A reload adds or revokes tokens: a leaked one stops working without a restart.
        source = self.configured()
        if source is not self._source:
            self._table, self._source = TokenTable(source), source
        return self._table

    def admit(self, request: web.Request) -> None:
        """Rate limit, body size, bearer token and scope, or the HTTPException refusing the
        request. Synchronous: app.py calls it from its one middleware (each middleware layer
        costs every request a coroutine and aiohttp's wrapper)."""
        presented = bearer(request.headers)
        tokens = self.tokens
        caller = tokens.identify(presented) if presented is not None else None
        # Unauthenticated (and wrong-token) callers share a bucket per address, so guessing
        # tokens is throttled too; a valid token cannot be starved by someone else.
        key = f"token:{caller.name}" if caller is not None else f"addr:{request.remote}"
        self._limit(key)
        if (request.content_length or 0) > self.max_body:
            raise too_large(self.max_body)
        needed = required_scope(request, protect_metrics=self.protect_metrics)
        if needed is not None and tokens:
            self._authorize(caller, presented is not None, needed)
        if caller is not None:
            request[CALLER] = caller.name

    def _limit(self, key: str) -> None:
        wait = self.limiter.take(key)
        if wait > 0:
            retry_after = str(max(1, math.ceil(wait)))
            raise web.HTTPTooManyRequests(
                reason=f"rate limit exceeded, retry in {retry_after}s",
                headers={"Retry-After": retry_after},
            )

    @staticmethod
    def _authorize(caller: ApiToken | None, presented: bool, needed: Scope) -> None:
        if caller is None and not presented:
            raise unauthorized("missing bearer token (Authorization: Bearer TOKEN)")
        if caller is None:
            raise unauthorized("invalid token", f'{REALM}, error="invalid_token"')
        if needed not in GRANTS[caller.scope]:
            raise web.HTTPForbidden(
                reason=f"token {caller.name!r} has scope {caller.scope}; this needs {needed}"
            )


# -- webhook signatures -------------------------------------------------------------------------

_UNIX_SECONDS = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")

SIGNATURE_CHALLENGE = 'Signature realm="runbookd"'
# A webhook request that presents no credentials at all may be for either scheme.
WEBHOOK_CHALLENGES = f"{SIGNATURE_CHALLENGE}, {REALM}"
NO_CREDENTIALS = (
    f"missing credentials: a bearer token, or {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers"
)
BEARER_REFUSED = "missing or invalid bearer token"
MISSING_SIGNATURE = f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
BAD_TIMESTAMP = f"{TIMESTAMP_HEADER}: not unix seconds"
# A signature that does not verify and a timestamp out of the tolerance get the same answer:
# both depend on the webhook's config, and the answer must not tell whether it exists. The
# log says which, for a webhook that exists.
BAD_SIGNATURE = f"{SIGNATURE_HEADER}: bad signature, or {TIMESTAMP_HEADER} too far from our clock"

# Checked where a request names no webhook that has a secret of its kind (or none at all): the
# same work and the same refusal as a wrong secret. Nobody holds it; it changes at each start.
NOBODYS_SECRET = secrets.token_urlsafe(32)


def public_problem(problem: str) -> str:
    """What a refused sender is told of `signature_problem`'s reason: only what its request
    alone shows, never what depends on the webhook's config."""
    return problem if problem in (MISSING_SIGNATURE, BAD_TIMESTAMP) else BAD_SIGNATURE


def presents_signature(headers: Mapping[str, str]) -> bool:
    return TIMESTAMP_HEADER in headers or SIGNATURE_HEADER in headers


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value a sender computes: HMAC-SHA256 of `timestamp.body`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signature_problem(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float, tolerance: float
) -> str | None:
    """Why a signed request is refused, or None. Over the raw bytes, never re-serialised JSON.
    The signature is computed whatever else is wrong with a well-formed request: refusing
    takes the same time for a bad timestamp as for a bad signature."""
    timestamp, given = headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)
    if timestamp is None or given is None:
        return MISSING_SIGNATURE
    if not _UNIX_SECONDS.match(timestamp):
        return BAD_TIMESTAMP
    match = _SIGNATURE.match(given)
    expected = sign(secret, timestamp, body).removeprefix("sha256=")
    verified = match is not None and hmac.compare_digest(match[1].lower(), expected)
    if abs(now - int(timestamp)) > tolerance:
        return f"{TIMESTAMP_HEADER}: more than {tolerance:g}s from our clock (a replay?)"
    if not verified:
        return f"{SIGNATURE_HEADER}: bad signature"
    return None


def signature_window(headers: Mapping[str, str], tolerance: float) -> tuple[str, float]:
    """A request `signature_problem` accepted: its signature, and until when its timestamp is
    accepted (after that it is refused by its timestamp, and need not be remembered)."""
    return headers[SIGNATURE_HEADER].lower(), int(headers[TIMESTAMP_HEADER]) + tolerance


# Never more signatures remembered than this, whatever the rate limit says: some 250 bytes
# each, so at most about 250 MB.
MAX_REPLAY_MEMORY = 1_000_000


def replay_capacity(rate: RateLimitConfig, tolerance: float) -> int:
    """How many signed requests one caller can get past the rate limiter while a signature
    must be remembered (up to twice the tolerance: a timestamp may be ahead of our clock)."""
    return min(MAX_REPLAY_MEMORY, math.ceil(rate.burst + rate.per_second * 2 * tolerance))


class ReplayGuard:
    """The signed webhook requests accepted lately, so that the same one is accepted once.

    A signature is remembered until its timestamp falls out of the tolerance (then the
    timestamp refuses it). Only signatures that verified are remembered, so only a holder of the
    secret can fill the memory. At `cap` the oldest is forgotten rather than the new request
    refused (which would let a flood shut the sender out): `replay_capacity` makes that need
    more requests than the rate limiter admits to one caller in the window. In memory: a
    restart forgets what was accepted before it, for one tolerance window.
    """

    def __init__(self) -> None:
        self._until: dict[str, float] = {}  # key -> expiry, in the order accepted
        self._full = False

    def __len__(self) -> int:
        return len(self._until)

    def admit(self, key: str, until: float, *, now: float, cap: int) -> bool:
        """True, and `key` remembered until `until`, unless it is remembered already."""
        self._expire(now)
        if key in self._until:
            return False
        self._until[key] = until
        if len(self._until) > cap:
            if not self._full:  # logged once, until it has room again
                log.warning("webhook replay memory full: forgetting the oldest signatures", cap=cap)
            self._full = True
            while len(self._until) > cap:
                del self._until[next(iter(self._until))]
        elif len(self._until) < cap * 0.9:
            self._full = False
        return True

    def forget(self, key: str) -> None:
        """The request was not accepted after all (an error): its sender may send it again."""
        self._until.pop(key, None)

    def _expire(self, now: float) -> None:
        # Oldest first: one whose timestamp was far ahead may hold younger ones back a while,
        # at most twice the tolerance (the cap bounds them meanwhile).
        while self._until:
            key, until = next(iter(self._until.items()))
            if until >= now:
                break
            del self._until[key]


# -- Grafana's signature (its webhook contact point's "HMAC Signature" settings) -----------------

_HEX_SIGNATURE = re.compile(r"^[0-9a-fA-F]{64}$")


def grafana_sign(secret: str, timestamp: str, body: bytes) -> str:
    """What Grafana sends: hex HMAC-SHA256 of `timestamp:body`, no prefix."""
    return hmac.new(secret.encode(), timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


def grafana_problem(
    signing: GrafanaSigning, headers: Mapping[str, str], body: bytes, *, now: float
) -> str | None:
    """Why a request is not signed by Grafana with `signing`'s secret, or None. These headers
    are the operator's choice, known to any sender: the reasons tell nothing secret."""
    timestamp, given = headers.get(signing.timestamp_header), headers.get(signing.header)
    if timestamp is None or given is None:
        return (
            f"missing {signing.timestamp_header} or {signing.header} header (Grafana's signature)"
        )
    if not _UNIX_SECONDS.match(timestamp):
        return f"{signing.timestamp_header}: not unix seconds"
    expected = grafana_sign(signing.hmac_secret.get_secret_value(), timestamp, body)
    verified = _HEX_SIGNATURE.match(given) is not None and hmac.compare_digest(
        given.lower(), expected
    )
    if not verified:
        return (
            f"{signing.header}: bad signature (expected the hex HMAC-SHA256 of "
            f"{signing.timestamp_header}:BODY with runbookd.api.grafana's secret)"
        )
    if abs(now - int(timestamp)) > signing.tolerance:
        return f"{signing.timestamp_header}: more than {signing.tolerance:g}s from our clock"
    return None
