"""A small client of the operator API, for `runbookd incidents`, `silence`, `jobs` and
`deploys`.

Two kinds of failure, kept apart because the command line exits differently on each: the
daemon answered no (`ApiError`, with its JSON reason), or there was no daemon to ask
(`Unreachable`: refused, timed out, not HTTP).
"""

from __future__ import annotations

import json
import os
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from daemon.cli.common import DEFAULT_URL

TIMEOUT = 10.0
# The largest answer read: a thousand incidents take a few MB. Whatever answers at the URL
# (a proxy, not runbookd at all) cannot make the command read without end.
MAX_ANSWER = 64 * 1024 * 1024

Answer = dict[str, Any]


class ApiError(Exception):
    """The daemon refused: the HTTP status and the reason from its `{"error": ...}` body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


class Unreachable(Exception):
    """No answer from a runbookd at that URL."""


def base_url(text: str) -> URL:
    """The daemon's address; ValueError unless it is an http(s) URL with a host."""
    url = URL(text)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"not an http(s) URL: {text!r} (e.g. {DEFAULT_URL})")
    return url


class Client:
    """One session per client; `async with Client(url, token=...) as api: ...`."""

    def __init__(
        self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = TIMEOUT
    ) -> None:
        self.base = base_url(url)
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=timeout)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    # -- incidents ---------------------------------------------------------------------------

    async def incidents(
        self, *, status: str | None = None, rule: str | None = None, limit: int | None = None
    ) -> Answer:
        query = {"status": status, "rule": rule, "limit": limit}
        return await self.call("GET", "incidents", query=query)

    async def incident(self, incident_id: str) -> Answer:
        return await self.call("GET", "incidents", incident_id)

    async def acknowledge(self, incident_id: str, by: str, reason: str = "") -> Answer:
        return await self._act(incident_id, "acknowledge", by, reason)

    async def resolve(self, incident_id: str, by: str, reason: str = "") -> Answer:
        return await self._act(incident_id, "resolve", by, reason)

    async def approve(self, incident_id: str, by: str, reason: str = "") -> Answer:
        return await self._act(incident_id, "approve", by, reason)

    async def reject(self, incident_id: str, by: str, reason: str = "") -> Answer:
        return await self._act(incident_id, "reject", by, reason)

    async def _act(self, incident_id: str, verb: str, by: str, reason: str) -> Answer:
        body = {"by": by, "reason": reason}
        return await self.call("POST", "incidents", incident_id, verb, body=body)

    async def approvals(self) -> Answer:
        return await self.call("GET", "approvals")

    # -- silences, rules ---------------------------------------------------------------------

    async def silences(self, *, expired: bool = False) -> Answer:
        return await self.call("GET", "silences", query={"expired": "true" if expired else None})

    async def create_silence(self, body: dict[str, Any]) -> Answer:
        return await self.call("POST", "silences", body=body)

    async def expire_silence(self, silence_id: str) -> Answer:
        return await self.call("DELETE", "silences", silence_id)

    async def rules(self) -> Answer:
        return await self.call("GET", "rules")

    # -- jobs --------------------------------------------------------------------------------

    async def jobs(self) -> Answer:
        return await self.call("GET", "jobs")

    async def job_runs(self, job: str, limit: int | None = None) -> Answer:
        return await self.call("GET", "jobs", job, "runs", query={"limit": limit})

    async def run_job(self, job: str) -> Answer:
        return await self.call("POST", "jobs", job, "run")

    # -- deploys -----------------------------------------------------------------------------

    async def announce_deploy(self, body: dict[str, Any]) -> Answer:
        return await self.call("POST", "deploys", body=body)

    async def deploys(self, *, status: str | None = None, limit: int | None = None) -> Answer:
        return await self.call("GET", "deploys", query={"status": status, "limit": limit})

    async def deploy(self, deploy_id: str) -> Answer:
        return await self.call("GET", "deploys", deploy_id)

    # -- HTTP --------------------------------------------------------------------------------

    def url(self, *segments: str) -> URL:
        # Each segment quoted whole: an id with "/" or "?" stays one path segment.
        path = "/".join(quote(s, safe="") for s in ("api", "v1", *segments))
        return URL(f"{str(self.base).rstrip('/')}/{path}", encoded=True)

    async def call(
        self,
        method: str,
        *segments: str,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Answer:
        """One request; the JSON answer, or ApiError / Unreachable."""
        if self._session is None:
            raise RuntimeError("use the client as `async with Client(...) as api`")
        url = self.url(*segments)
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        try:
            async with self._session.request(method, url, params=params, json=body) as response:
                return answer(response.status, await _read(response), response.reason)
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(f"cannot connect to {self.base}: {_why(exc)}") from None
        except TimeoutError:
            raise Unreachable(f"no answer from {self.base} within {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise Unreachable(f"cannot talk to {self.base}: {exc}") from None


async def _read(response: aiohttp.ClientResponse) -> bytes:
    body = await response.content.read(MAX_ANSWER + 1)
    while len(body) <= MAX_ANSWER and (more := await response.content.read(MAX_ANSWER + 1)):
        body += more
    if len(body) > MAX_ANSWER:
        raise ApiError(response.status, f"answer larger than {MAX_ANSWER >> 20} MiB")
    return body


def answer(status: int, raw: bytes, phrase: str | None = None) -> Answer:
    """The JSON object of a 2xx answer, or ApiError with the reason the daemon gave."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError too), or too deep
        doc = None
    if status >= 400:
        reason = doc.get("error") if isinstance(doc, dict) else None
        # Not runbookd's JSON (a proxy's page?): the start of the text, or the status phrase.
        text = " ".join(raw.decode("utf-8", "replace").split())[:200]
        raise ApiError(status, str(reason) if reason is not None else text or phrase or "?")
    if not isinstance(doc, dict):
        raise ApiError(status, "the answer is not a JSON object (is that a runbookd?)")
    return doc


def _why(exc: aiohttp.ClientConnectorError) -> str:
    # "Connection refused" rather than asyncio's "Connect call failed ('127.0.0.1', 9464)".
    error = exc.os_error
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)
    return error.strerror or str(error)
