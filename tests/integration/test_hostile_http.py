"""Hostile HTTP: raw requests over real sockets against a daemon on loopback.

Each malformed request gets a JSON `{"error": reason}` that never quotes it, and leaves at
most one log line, without a traceback or a header value. Slow, idle and surplus connections
are closed (the timeouts shortened to fractions of a second here), and /healthz answers all
the while. A client that goes away mid-body is a client error. NaN, Infinity and numbers
beyond a double are refused in every body.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import math
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from daemon.api import app as api
from daemon.api import bodies, routes
from daemon.api.app import build_app
from daemon.api.bodies import NOT_FINITE
from daemon.api.servers import HttpLimits, start_site
from daemon.runtime.daemon import Daemon
from tests.utils import rendered_logs, run_daemon

WRITE = "w-hostile-0123456789abcdef"
WEBHOOK_TOKEN = "wh-hostile-0123456789abcdef"
# Sent in malformed requests: it must show nowhere, neither in an answer nor in a log.
SECRET = "s3cr3t-bearer-0123456789abcdef"

CONFIG = """\
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  drain_grace: 1s
  api:
    rate_limit: {{per_second: 10000, burst: 10000}}
    tokens:
      - {{name: ops, token: {write}, scope: write}}
rules:
  errors:
    when: {{alert: HighErrorRate}}
webhooks:
  grafana:
    fields: {{name: title, status: state}}
    auth: {{token: {webhook}}}
"""

# Timeouts short enough for a test, long enough for a loaded 2-core machine to meet them.
FAST = HttpLimits(header_timeout=0.3, body_timeout=0.3, idle_timeout=1.0, max_connections=20)
# For the corpus: a refused body is skipped for at most body_timeout (1 s) before closing.
CORPUS_LIMITS = HttpLimits(header_timeout=5, body_timeout=1, idle_timeout=5)


def write_config(directory: Path) -> Path:
    path = directory / "runbookd.yaml"
    path.write_text(CONFIG.format(state=directory / "state", write=WRITE, webhook=WEBHOOK_TOKEN))
    return path


@asynccontextmanager
async def daemon_with_logs(tmp_path: Path) -> AsyncIterator[tuple[Daemon, io.StringIO]]:
    with rendered_logs() as logs:
        async with run_daemon(write_config(tmp_path)) as daemon:
            yield daemon, logs


@asynccontextmanager
async def fast_site(daemon: Daemon, limits: HttpLimits = FAST) -> AsyncIterator[int]:
    """The daemon's API once more, on another port, with short timeouts; yields the port."""
    runner, port = await start_site(build_app(daemon, limits=limits), "127.0.0.1", 0)
    try:
        yield port
    finally:
        await runner.cleanup()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> str:
        assert self.headers["content-type"] == "application/json; charset=utf-8"
        decoded = json.loads(self.body)
        assert list(decoded) == ["error"]
        reason: str = decoded["error"]
        return reason


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in filter(None, lines):
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body)


async def exchange(port: int, raw: bytes, within: float = 5.0) -> Answer:
    """Send `raw`, read the answer, and wait for the server to close the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(within):
            writer.write(raw)
            await writer.drain()
            answer = await read_answer(reader)
            assert await reader.read() == b""  # closed: the server is done with it
            return answer
    finally:
        writer.close()


def request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body


# -- malformed requests: a JSON 4xx, one quiet log line ------------------------------------------

MALFORMED_HEAD = "malformed request: header syntax or body framing"
UNKNOWN_METHOD = "malformed request line: unknown method"
TOO_LONG = "request line or header field too long"
AUTH_WRITE = f"Authorization: Bearer {WRITE}\n"
ALERTS = "POST /api/v1/alerts HTTP/1.1\nHost: x\nConnection: close\n" + AUTH_WRITE

# (name, raw request, status, error). Each request closes its connection: "Connection: close"
# where the server would keep it open.
CORPUS: list[tuple[str, bytes, int, str]] = [
    ("binary garbage", b"\x00\x01\x02\xff hello\r\n\r\n", 400, UNKNOWN_METHOD),
    (
        "a TLS client hello",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"r" * 64,
        400,
        UNKNOWN_METHOD,
    ),
    ("an unknown method", request("FROB /healthz HTTP/1.1\nHost: x\n"), 400, UNKNOWN_METHOD),
    (
        "a control character in the method",
        request("G\x01T /healthz HTTP/1.1\nHost: x\n"),
        400,
        UNKNOWN_METHOD,
    ),
    (
        "HTTP/9.9",
        request("GET /healthz HTTP/9.9\nHost: x\n"),
        400,
        "malformed request line: expected METHOD TARGET HTTP/1.x",
    ),
    (
        "a version that is not one",
        request("GET /healthz HTTP/1.x\nHost: x\n"),
        400,
        "malformed request line: expected METHOD TARGET HTTP/1.x",
    ),
    ("a 20 kB URL", request(f"GET /{'a' * 20_000} HTTP/1.1\nHost: x\n"), 400, TOO_LONG),
    (
        "a 20 kB header",
        request(f"GET /healthz HTTP/1.1\nHost: x\nX-Big: {'a' * 20_000}\n"),
        400,
        TOO_LONG,
    ),
    (
        "a 20 kB header name",
        request(f"GET /healthz HTTP/1.1\nHost: x\n{'X' * 20_000}: 1\n"),
        400,
        TOO_LONG,
    ),
    (
        "300 headers",
        request("GET /healthz HTTP/1.1\nHost: x\n" + "".join(f"X-{i}: 1\n" for i in range(300))),
        400,
        MALFORMED_HEAD,
    ),
    (
        "a control character after a bearer token",
        request(f"GET /api/v1/incidents HTTP/1.1\nHost: x\nAuthorization: Bearer {SECRET}\x01\n"),
        400,
        MALFORMED_HEAD,
    ),
    (
        "a NUL in a header value",
        request(f"GET /healthz HTTP/1.1\nHost: x\nX-A: {SECRET}\x00\n"),
        400,
        MALFORMED_HEAD,
    ),
    (
        "a control character in the URL",
        request("GET /heal\x01thz HTTP/1.1\nHost: x\n"),
        400,
        "malformed request target",
    ),
    (
        "a broken absolute URL",
        request("GET http://[::1 HTTP/1.1\nHost: x\n"),
        400,
        "malformed request target",
    ),
    ("Content-Length: -1", request(ALERTS + "Content-Length: -1\n"), 400, MALFORMED_HEAD),
    ("Content-Length: abc", request(ALERTS + "Content-Length: abc\n"), 400, MALFORMED_HEAD),
    (
        "two Content-Lengths",
        request(ALERTS + "Content-Length: 2\nContent-Length: 3\n", b"{}"),
        400,
        MALFORMED_HEAD,
    ),
    (
        "Content-Length and chunked",
        request(ALERTS + "Content-Length: 5\nTransfer-Encoding: chunked\n", b"0\r\n\r\n"),
        400,
        MALFORMED_HEAD,
    ),
    (
        "an unknown Transfer-Encoding",
        request(ALERTS + "Transfer-Encoding: gzip\n"),
        400,
        MALFORMED_HEAD,
    ),
    (
        "a chunk size that is not hex",
        request(
            ALERTS + "Content-Type: application/json\nTransfer-Encoding: chunked\n",
            b"zz\r\n{}\r\n0\r\n\r\n",
        ),
        400,
        MALFORMED_HEAD,
    ),
    (
        "a space in a header name",
        request(f"GET /healthz HTTP/1.1\nHost: x\nX {SECRET}: 1\n"),
        400,
        MALFORMED_HEAD,
    ),
    (
        "a header without a colon",
        request(f"GET /healthz HTTP/1.1\nHost: x\n{SECRET}\n"),
        400,
        MALFORMED_HEAD,
    ),
    (
        "a folded header",
        request(f"GET /healthz HTTP/1.1\nHost: x\nX-A: 1\n {SECRET}\n"),
        400,
        MALFORMED_HEAD,
    ),
    # Well-formed, refused by the app: JSON as well.
    (
        "a declared body over max_body",
        request(ALERTS + "Content-Length: 99999999\n"),
        413,
        "body larger than 1048576 bytes",
    ),
    (
        "a chunked body over max_body",
        request(
            ALERTS + "Content-Type: application/json\nTransfer-Encoding: chunked\n",
            b"%x\r\n%s\r\n0\r\n\r\n" % (2 * 1024 * 1024, b" " * 2 * 1024 * 1024),
        ),
        413,
        "body larger than 1048576 bytes",
    ),
    (
        "a gzip body that is not gzip",
        request(
            ALERTS + "Content-Type: application/json\nContent-Encoding: gzip\nContent-Length: 5\n",
            b"hello",
        ),
        400,
        "body framing or encoding is malformed",
    ),
]


@pytest.mark.parametrize(
    ("raw", "status", "error"),
    [pytest.param(raw, status, error, id=name) for name, raw, status, error in CORPUS],
)
async def test_a_malformed_request_gets_a_json_error_and_one_quiet_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, raw: bytes, status: int, error: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with (
        daemon_with_logs(tmp_path) as (daemon, logs),
        fast_site(daemon, CORPUS_LIMITS) as port,
    ):
        before = logs.getvalue()
        answer = await exchange(port, raw)
        assert (answer.status, answer.error()) == (status, error)
        assert SECRET.encode() not in answer.body
        new = logs.getvalue()[len(before) :]
        healthy = await exchange(
            port, request("GET /healthz HTTP/1.1\nHost: x\nConnection: close\n")
        )
        assert (healthy.status, json.loads(healthy.body)) == (200, {"status": "ok"})
    assert len(new.splitlines()) <= 1, new
    assert "Traceback" not in new
    assert SECRET not in logs.getvalue()
    for record in caplog.records:  # aiohttp's own loggers stay quiet
        assert record.exc_info is None, record.getMessage()
        assert SECRET not in record.getMessage()
        assert not record.name.startswith("aiohttp") or record.levelno < logging.INFO


async def test_the_daemons_own_listener_is_guarded(tmp_path: Path) -> None:
    """The daemon serves its API with runbookd.api's limits (defaults here) and the guarded
    protocol, not only the second sites these tests start."""
    raw = request(f"GET /healthz HTTP/1.1\nHost: x\nAuthorization: Bearer {SECRET}\x01\n")
    async with run_daemon(write_config(tmp_path)) as daemon:
        answer = await exchange(daemon.port, raw)
        assert api.http_limits(daemon.config.runbookd.api) == HttpLimits()
    assert (answer.status, answer.error()) == (400, MALFORMED_HEAD)


# -- slow, idle and surplus connections -----------------------------------------------------------

HALF_A_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """All the server sends until it closes the connection, which it must within `seconds`."""
    async with asyncio.timeout(seconds):
        return await reader.read()


async def healthz(session: aiohttp.ClientSession, port: int) -> int:
    async with session.get(
        f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(5)
    ) as r:
        return r.status


async def test_half_sent_request_heads_are_answered_408_and_closed(tmp_path: Path) -> None:
    # Fewer than the cap: the head timeout alone closes them.
    limits = dataclasses.replace(FAST, max_connections=250)
    async with run_daemon(write_config(tmp_path)) as daemon, fast_site(daemon, limits) as port:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
        for _, writer in conns:
            writer.write(HALF_A_HEAD)
        started = time.monotonic()
        answers = await asyncio.gather(*(closed_within(r, 5) for r, _ in conns))
        took = time.monotonic() - started
        for _, writer in conns:
            writer.close()
    assert took >= FAST.header_timeout * 0.9
    for raw in answers:
        answer = await read_answer(reader_of(raw))
        assert (answer.status, answer.error()) == (
            408,
            "request line and headers not received within 0.3s",
        )


def reader_of(raw: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    return reader


async def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_head_timeout(tmp_path: Path) -> None:
    """Slowloris: bytes keep coming, but the head must be whole within the timeout."""
    async with run_daemon(write_config(tmp_path)) as daemon, fast_site(daemon) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()

        async def trickle() -> None:
            writer.write(HALF_A_HEAD)
            with contextlib.suppress(ConnectionError):
                while True:
                    await asyncio.sleep(0.05)
                    writer.write(b"a")
                    await writer.drain()

        trickling = asyncio.create_task(trickle())
        try:
            raw = await closed_within(reader, 5)
        finally:
            trickling.cancel()
            writer.close()
        took = time.monotonic() - started
    assert FAST.header_timeout * 0.9 <= took < 3
    assert (await read_answer(reader_of(raw))).status == 408


async def test_an_idle_connection_is_closed_and_keep_alive_still_works(tmp_path: Path) -> None:
    async with run_daemon(write_config(tmp_path)) as daemon, fast_site(daemon) as port:
        # Never a byte: closed, without an answer, after the idle timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        assert await closed_within(reader, 5) == b""
        assert FAST.idle_timeout * 0.9 <= time.monotonic() - started
        writer.close()
        # Requests in a row on one connection, each well within the timeouts.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_answer(reader)).status == 200
            await asyncio.sleep(FAST.header_timeout)  # longer than the head timeout: idle
        assert await closed_within(reader, 5) == b""  # then idle for too long
        writer.close()


async def test_at_the_connection_cap_the_oldest_idle_make_room_and_healthz_answers(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    # Long timeouts: only the cap closes anything here.
    limits = HttpLimits(header_timeout=60, body_timeout=60, idle_timeout=60, max_connections=20)
    async with run_daemon(write_config(tmp_path)) as daemon, fast_site(daemon, limits) as port:
        conns = []
        for _ in range(50):  # 2.5 times the cap, half-sent heads and idle ones
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HALF_A_HEAD if len(conns) % 2 else b"")
            conns.append((reader, writer))
        for _ in range(10):
            assert await healthz(session, port) == 200
        await asyncio.sleep(0.1)
        closed = [reader.at_eof() for reader, _ in conns]
        for _, writer in conns:
            writer.close()
    # The oldest 30 made room for the newest 20 (the pooled health check shares them).
    assert closed[:29] == [True] * 29
    assert closed[-10:] == [False] * 10


async def test_a_body_that_stalls_is_answered_408(tmp_path: Path) -> None:
    async with run_daemon(write_config(tmp_path)) as daemon, fast_site(daemon) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        head = ALERTS + "Content-Type: application/json\nContent-Length: 100\n"
        writer.write(request(head, b'{"version": '))
        answer = await asyncio.wait_for(read_answer(reader), 5)
        took = time.monotonic() - started
        writer.close()
    assert (answer.status, answer.error()) == (408, "body not received within 0.3s")
    assert FAST.body_timeout * 0.9 <= took < 3


# -- a client that goes away mid-body -------------------------------------------------------------


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, as a crashed client's kernel does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


def counted(metrics: str, route: str, code_class: str) -> float:
    line = f'runbookd_api_requests_total{{code_class="{code_class}",route="{route}"}} '
    found = [float(x.split()[-1]) for x in metrics.splitlines() if x.startswith(line)]
    return found[0] if found else 0.0


async def test_a_client_gone_mid_body_is_a_client_error_without_a_traceback(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    route = "/api/v1/webhooks/{name}"
    head = (
        "POST /api/v1/webhooks/grafana HTTP/1.1\nHost: x\nContent-Type: application/json\n"
        f"Authorization: Bearer {WEBHOOK_TOKEN}\nContent-Length: 1000\n"
    )
    async with daemon_with_logs(tmp_path) as (daemon, logs):
        for attempt in range(10):
            _, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
            writer.write(request(head, b'{"title": "x", "st'))
            await writer.drain()
            await asyncio.sleep(0.02)  # the handler is reading the body
            if attempt % 2:
                reset(writer)
            else:
                writer.close()

        async def metrics() -> str:
            async with session.get(f"http://127.0.0.1:{daemon.port}/metrics") as r:
                return await r.text()

        deadline = time.monotonic() + 5
        while counted(await metrics(), route, "4xx") < 10:
            assert time.monotonic() < deadline, await metrics()
            await asyncio.sleep(0.02)
        final = await metrics()
    assert counted(final, route, "4xx") == 10
    assert counted(final, route, "5xx") == 0
    assert "Traceback" not in logs.getvalue()
    assert "api request failed" not in logs.getvalue()


# -- NaN, Infinity and numbers beyond a double -----------------------------------------------------

NOT_NUMBERS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1.5E+309",
    b"1" + b"0" * 400,  # an integer beyond a double
    b"1" + b"0" * 250 + b"e99",
]
# Vercel's webhook verifies its signature before it reads the body as JSON (test_deploys.py).
BODY_ROUTES = [
    op.path.replace("{id}", "some-incident").replace("{name}", "grafana")
    for op in routes.OPERATIONS
    if op.method == "post" and op.body is not None and op.auth != "vercel"
]


@pytest.mark.parametrize("number", NOT_NUMBERS, ids=lambda n: n.decode()[:12])
async def test_every_body_refuses_nan_infinity_and_overflowing_numbers(
    tmp_path: Path, session: aiohttp.ClientSession, number: bytes
) -> None:
    assert len(BODY_ROUTES) == 12
    async with run_daemon(write_config(tmp_path)) as daemon:
        for path in BODY_ROUTES:
            token = WEBHOOK_TOKEN if "webhooks" in path else WRITE
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            for body in (b'{"value": %s}' % number, b'{"a": [1, {"b": %s}]}' % number):
                url = f"http://127.0.0.1:{daemon.port}{path}"
                async with session.post(url, data=body, headers=headers) as r:
                    assert (r.status, await r.json()) == (400, {"error": NOT_FINITE}), path


async def test_the_words_nan_and_infinity_in_strings_and_large_finite_numbers_pass(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    silence = {
        "created_by": "ana",
        "comment": "NaN Infinity 1e400 [1e400, NaN]",
        "labels": {"note": ",NaN"},
        "duration": "1h",
    }
    body = json.dumps(silence).encode()[:-1] + b', "rule": "errors"}'
    async with run_daemon(write_config(tmp_path)) as daemon:
        url = f"http://127.0.0.1:{daemon.port}/api/v1/silences"
        headers = {"Authorization": f"Bearer {WRITE}", "Content-Type": "application/json"}
        async with session.post(url, data=body, headers=headers) as r:
            assert r.status == 201, await r.text()
    assert bodies.parse_json(b"[1.7e308, -1e-400, 1e99, 1%s]" % (b"0" * 300)) == [
        1.7e308,
        -0.0,
        1e99,
        10**300,
    ]


async def test_a_stored_nan_is_a_500_not_invalid_json(
    tmp_path: Path, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run_daemon(write_config(tmp_path)) as daemon:
        monkeypatch.setattr(daemon, "health", lambda: (False, math.nan))
        async with session.get(f"http://127.0.0.1:{daemon.port}/healthz") as r:
            assert (r.status, await r.json()) == (500, {"error": "internal error"})
