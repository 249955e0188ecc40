"""One retry policy for every HTTP call a remediation makes (webhooks, paging, chat).

Retried: connection errors, timeouts, 429 and 5xx, with exponential backoff on the injected
clock. Retry-After is honoured in full (seconds or an HTTP date; on a 429 without it, an
`X-RateLimit-Reset` in epoch seconds, which is how Vercel and GitHub say it): a wait longer
than the call's `max_delay` ends the call, recoverable, with `retry_after` for the caller
(the outbox) to wait out; the provider is never asked again sooner than it said. A request
that is not idempotent (`idempotent=False`) is repeated only when the provider surely did
not act on it: a 429 or a connection never made; a 5xx or a timeout may come after it
acted, so neither is retried, here or later. Never retried: other 4xx and anything else
unexpected, since sending the same request again cannot fix it. Redirects are not followed:
a webhook that redirects is misconfigured, and following it could carry credentials to
another host.

By default only an excerpt of the response is kept, for the timeline; a caller that needs
the whole body (an API client reading JSON) passes `max_body` and reads `HttpOutcome.json()`.
Secrets are masked in what is kept before it is cut (daemon.redaction.excerpt): a provider
that echoes a key across the cut leaves no part of it.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import Field
from yarl import URL

from daemon.core.models import RemediationResult
from daemon.core.redaction import excerpt, redact_credentials
from daemon.core.units import PositiveDuration, StrictModel
from remediations.base import RemediationConfig, RemediationContext

# Characters of a response kept for the timeline.
EXCERPT_CHARS = 1024
DEFAULT_ATTEMPTS = 4
_TRUNCATED = "…(truncated)"


class RetryConfig(StrictModel):
    """How hard an HTTP call tries: `retry: {attempts: 4, base_delay: 1s}`. A connection
    error, a timeout, a 429 or a 5xx is tried again after `base_delay`, doubling each time up
    to `max_delay`; a `Retry-After` (or, on a 429, `X-RateLimit-Reset`) is waited in full, and
    one beyond `max_delay` ends the call as recoverable. Any other status, a TLS error or a
    redirect (never followed) is not retried."""

    attempts: int = Field(
        default=DEFAULT_ATTEMPTS, ge=1, le=10, description="Attempts in all, the first included."
    )
    base_delay: PositiveDuration = Field(
        default=1.0, description="The wait before the second attempt; doubled for each next one."
    )
    max_delay: PositiveDuration = Field(
        default=30.0, description="The longest wait between two attempts."
    )


class RetryingConfig(RemediationConfig):
    """Config of a remediation whose HTTP call is retried; `timeout` bounds one attempt."""

    retry: RetryConfig = Field(
        default=RetryConfig(), description="Retries of a failed call; `timeout` bounds each one."
    )

    def deadline(self) -> float:
        # Every attempt may run its full timeout and every wait may reach max_delay.
        return self.retry.attempts * self.timeout + (self.retry.attempts - 1) * self.retry.max_delay


@dataclass(frozen=True, slots=True)
class HttpOutcome:
    """The end of a (possibly retried) request: what the last attempt got back.

    `body` is at most the first EXCERPT_CHARS of the response, for the timeline; `text` is
    the whole of it, kept only when send_json was given `max_body`.
    """

    ok: bool
    status: int | None
    body: str
    attempts: int
    recoverable: bool
    error: str = ""
    delays: tuple[float, ...] = ()
    text: str = field(default="", repr=False)
    # The last attempt's Retry-After, in seconds: no retry may come sooner.
    retry_after: float | None = None
    # Not idempotent, and the provider may have acted before failing: not repeated.
    unsure: bool = False

    def json(self) -> Any:
        """The whole body parsed as JSON; None if empty, not JSON, or not kept (max_body)."""
        if not self.text:
            return None
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    def describe(self) -> str:
        last = self.error or f"HTTP {self.status}"
        if self.retry_after is not None and not self.ok:
            last += f" (retry after {self.retry_after:g}s)"
        if self.unsure:
            return f"{last}; not retried: the provider may have acted on it"
        if self.ok or not self.recoverable:
            return last
        return f"gave up after {self.attempts} attempts, last: {last}"

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": self.status,
            "response": self.body,
            "attempts": self.attempts,
        }
        if self.delays:
            data["backoff_seconds"] = list(self.delays)
        if self.error:
            data["error"] = self.error
        if self.retry_after is not None and not self.ok:
            data["retry_after_seconds"] = self.retry_after
        return data

    def result(self, action: str, request: Mapping[str, Any]) -> RemediationResult:
        """`action` and `request` describe what was sent; neither may carry a secret."""
        return RemediationResult(
            ok=self.ok,
            detail=f"{action}: {self.describe()}",
            recoverable=self.recoverable,
            data={"request": dict(request), **self.as_data()},
            retry_after=self.retry_after if self.recoverable else None,
        )


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None
    # What was read of the body (up to a bound; `more`: there was more), not yet redacted.
    body: str = ""
    more: bool = False
    text: str = ""
    error: str = ""
    retry: bool = False
    retry_after: float | None = None
    # The provider surely did not act on the request (a 429, a connection never made).
    unsent: bool = False


def safe_url(url: str) -> str:
    """Scheme and host only: paths and queries of webhooks often are the credential."""
    try:
        return str(URL(url).origin())
    except ValueError:
        return "<invalid url>"


def check_http_url(url: str) -> str:
    """Validate an absolute http(s) URL; the message never repeats it (it may be a secret)."""
    try:
        parsed = URL(url)
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("must be an absolute http:// or https:// URL")
    return url


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with `secrets` and URL or DSN passwords masked; to cut it too, use `excerpt`."""
    return redact_credentials(text, [s for s in secrets if s])


async def send_json(
    ctx: RemediationContext,
    method: str,
    url: str | URL,
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    attempt_timeout: float = 10.0,
    attempts: int = DEFAULT_ATTEMPTS,
    base_delay: float = 1.0,
    max_delay: float = 30.0,
    expect: Collection[int] = (),
    redact_values: Sequence[str] = (),
    max_body: int | None = None,
    idempotent: bool = True,
) -> HttpOutcome:
    """Send `body` as JSON (None: no body). Success is a status in `expect`, default any 2xx.

    `attempt_timeout` bounds each attempt; the whole call may take attempts x that + backoff.

    With `max_body`, a body of up to that many bytes is kept whole in `text` (see
    HttpOutcome.json); a longer one fails with "response too large" and is not retried.

    Not `idempotent`: only a failure the provider surely did not act on is retried or left
    recoverable (a 429, a connection never made).

    Never raises for network or HTTP failures; `redact_values` are masked in what it returns.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    data = None if body is None else json.dumps(body).encode()
    request_headers = {"Content-Type": "application/json"} if data is not None else {}
    request_headers.update(headers or {})
    delays: list[float] = []
    attempt = 0
    while True:
        attempt += 1
        result = await _attempt(ctx, method, url, data, request_headers, attempt_timeout, max_body)
        ok = not result.error and _expected(result.status, expect)
        retry = not ok and result.retry and (idempotent or result.unsent)
        # A Retry-After beyond what this call may wait is left to the caller, in full.
        too_long = result.retry_after is not None and result.retry_after > max_delay
        if not retry or too_long or attempt >= attempts:
            return HttpOutcome(
                ok=ok,
                status=result.status,
                body=_excerpt(result, redact_values),
                attempts=attempt,
                recoverable=retry,
                error=redact(result.error, redact_values),
                delays=tuple(delays),
                text=redact(result.text, redact_values),
                retry_after=result.retry_after,
                unsure=not ok and result.retry and not retry,
            )
        delay = _backoff(attempt, base_delay, max_delay, result.retry_after)
        delays.append(delay)
        await ctx.clock.sleep(delay)


async def _attempt(
    ctx: RemediationContext,
    method: str,
    url: str | URL,
    data: bytes | None,
    headers: Mapping[str, str],
    attempt_timeout: float,
    max_body: int | None,
) -> _Attempt:
    try:
        async with ctx.session.request(
            method,
            url,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=attempt_timeout),
            allow_redirects=False,
        ) as resp:
            limit = max(EXCERPT_CHARS, max_body or 0)
            raw = await _read(resp, limit)
            body, more = raw[:limit].decode("utf-8", errors="replace"), len(raw) > limit
            if max_body is not None and len(raw) > max_body:
                return _Attempt(resp.status, body=body, more=more, error="response too large")
            return _Attempt(
                status=resp.status,
                body=body,
                more=more,
                text="" if max_body is None else raw.decode("utf-8", errors="replace"),
                retry=resp.status == 429 or resp.status >= 500,
                retry_after=_wait_asked(resp, ctx.clock.now()),
                unsent=resp.status == 429,
            )
    except TimeoutError:
        return _Attempt(None, error=f"timed out after {attempt_timeout:g}s", retry=True)
    except aiohttp.InvalidURL:
        # Its message repeats the URL, which may be the secret itself.
        return _Attempt(None, error="invalid URL")
    except aiohttp.ClientSSLError as exc:
        # A certificate problem does not go away by asking again.
        return _Attempt(None, error=f"TLS error: {type(exc).__name__}")
    except aiohttp.ClientConnectorError as exc:
        # No connection, so nothing was sent: safe to send again, idempotent or not.
        return _Attempt(None, error=f"{type(exc).__name__}: {exc}", retry=True, unsent=True)
    except aiohttp.ClientResponseError as exc:
        # A malformed response; str(exc) would repeat the full URL.
        return _Attempt(None, error=f"{type(exc).__name__}: {exc.message}", retry=True)
    except aiohttp.ClientError as exc:
        return _Attempt(None, error=f"{type(exc).__name__}: {exc}", retry=True)


async def _read(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to `limit` bytes, plus one more if there is more; the rest is never read."""
    data = bytearray()
    while len(data) <= limit:
        chunk = await resp.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _excerpt(result: _Attempt, secrets: Sequence[str]) -> str:
    """The start of the body for the timeline: EXCERPT_CHARS of it, then the marker."""
    limit = EXCERPT_CHARS + len(_TRUNCATED)
    return excerpt(result.body, limit, secrets, _TRUNCATED, whole=not result.more)


def _expected(status: int | None, expect: Collection[int]) -> bool:
    if status is None:
        return False
    return status in expect if expect else 200 <= status < 300


def _wait_asked(resp: aiohttp.ClientResponse, now: float) -> float | None:
    """How long the provider asked us to wait, in seconds, if it said so in a way we read."""
    wait = _retry_after(resp.headers.get("Retry-After"), now)
    if wait is None and resp.status == 429:
        wait = _reset_at(resp.headers.get("X-RateLimit-Reset"), now)
    return wait


def _retry_after(value: str | None, now: float) -> float | None:
    """Retry-After: delay-seconds or an HTTP date (RFC 9110 section 10.2.3); a date already
    past (a skewed clock on either side) falls back to our own backoff, not to no wait."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return None
        if seconds <= 0:
            return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _reset_at(value: str | None, now: float) -> float | None:
    """X-RateLimit-Reset as epoch seconds; one already past falls back to our own backoff."""
    if value is None:
        return None
    try:
        wait = float(value) - now
    except ValueError:
        return None
    return wait if math.isfinite(wait) and wait > 0 else None


def _backoff(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    if retry_after is not None:
        # send_json never gets here with a Retry-After above the cap: it is waited in full.
        return retry_after
    return float(min(cap, base * 2 ** (attempt - 1)))
