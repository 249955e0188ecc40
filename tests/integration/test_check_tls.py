"""The `tls` check against real TLS servers on loopback, with certificates from trustme."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from cryptography import x509

from checks.base import CheckContext, CheckResult
from checks.tls import TlsCheck, TlsCheckConfig
from daemon.core.clock import ManualClock
from daemon.core.models import Status
from tests.utils import free_port

DAY = 86400.0
NOW = time.time()


@pytest.fixture
def clock() -> ManualClock:
    # Real time: OpenSSL verifies against the system clock, days_left against this one.
    return ManualClock(start=NOW)


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> CheckContext:
    return CheckContext(session=session, clock=clock)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def issue(ca: trustme.CA, *names: str, days: float = 90.0) -> trustme.LeafCert:
    """A certificate valid from ten days ago until `days` from NOW (negative: expired)."""
    not_after = dt.datetime.fromtimestamp(NOW + days * DAY, dt.UTC)
    not_before = dt.datetime.fromtimestamp(NOW - 10 * DAY, dt.UTC)
    return ca.issue_cert(*names, not_before=not_before, not_after=not_after)


def expiry(cert: trustme.LeafCert) -> float:
    """notAfter as the certificate carries it (whole seconds)."""
    parsed = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
    return parsed.not_valid_after_utc.timestamp()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@asynccontextmanager
async def listening(
    handler: Handler = hang_up, context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """A server on 127.0.0.1 (TLS when given a context); yields its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def presenting(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def make(port: int, **fields: Any) -> TlsCheck:
    data = {"type": "tls", "host": "127.0.0.1", "port": port, **fields}
    return TlsCheck("cert", TlsCheckConfig.model_validate(data))


async def check(ctx: CheckContext, cert: trustme.LeafCert, **fields: Any) -> CheckResult:
    async with listening(context=presenting(cert)) as port:
        return await make(port, **fields).run(ctx)


async def test_valid(ctx: CheckContext, ca: trustme.CA, ca_file: str) -> None:
    cert = issue(ca, "localhost", days=90)
    result = await check(ctx, cert, server_name="localhost", ca_file=ca_file)
    assert (result.status, result.reason) == (Status.OK, "")
    assert result.values == {
        "valid": 1.0,
        "expires_at": expiry(cert),
        "days_left": pytest.approx(90.0, abs=1e-4),
    }


async def test_ip_address_in_the_certificate(
    ctx: CheckContext, ca: trustme.CA, ca_file: str
) -> None:
    # No server_name: the host itself, an IP address, is checked against the IP SANs.
    result = await check(ctx, issue(ca, "127.0.0.1"), ca_file=ca_file)
    assert result.status is Status.OK
    assert result.values["valid"] == 1.0


async def test_expiring_soon_is_warn(ctx: CheckContext, ca: trustme.CA, ca_file: str) -> None:
    cert = issue(ca, "localhost", days=5)
    result = await check(ctx, cert, server_name="localhost", ca_file=ca_file)
    assert (result.status, result.reason) == (Status.WARN, "certificate expires in 5.0 days")
    assert result.values["valid"] == 1.0
    many = await check(ctx, cert, server_name="localhost", ca_file=ca_file, warn_days=3)
    assert many.status is Status.OK


async def test_days_left_follows_the_clock(
    ctx: CheckContext, clock: ManualClock, ca: trustme.CA, ca_file: str
) -> None:
    async with listening(context=presenting(issue(ca, "localhost", days=30))) as port:
        tls = make(port, server_name="localhost", ca_file=ca_file)
        assert (await tls.run(ctx)).status is Status.OK
        await clock.advance(20 * DAY)
        soon = await tls.run(ctx)
        await clock.advance(11 * DAY)
        late = await tls.run(ctx)
    assert (soon.status, soon.reason) == (Status.WARN, "certificate expires in 10.0 days")
    assert soon.values["days_left"] == pytest.approx(10.0, abs=1e-4)
    # OpenSSL, on the system clock, still accepts it; our clock says it has expired.
    assert (late.status, late.reason) == (Status.CRITICAL, "certificate expired")
    assert late.values["valid"] == 0.0
    assert late.values["days_left"] == pytest.approx(-1.0, abs=1e-4)


async def test_expired(ctx: CheckContext, ca: trustme.CA, ca_file: str) -> None:
    cert = issue(ca, "localhost", days=-2)
    result = await check(ctx, cert, server_name="localhost", ca_file=ca_file)
    assert (result.status, result.reason) == (Status.CRITICAL, "certificate expired")
    # Read again without verification, so the expiry is still known.
    assert result.values == {
        "valid": 0.0,
        "expires_at": expiry(cert),
        "days_left": pytest.approx(-2.0, abs=1e-4),
    }


async def test_wrong_hostname(ctx: CheckContext, ca: trustme.CA, ca_file: str) -> None:
    cert = issue(ca, "other.example", "www.other.example", days=60)
    result = await check(ctx, cert, server_name="localhost", ca_file=ca_file)
    assert result.status is Status.CRITICAL
    assert result.reason == (
        "hostname mismatch: cert is for other.example, www.other.example, not localhost"
    )
    assert result.values["valid"] == 0.0
    assert result.values["days_left"] == pytest.approx(60.0, abs=1e-4)


async def test_unknown_ca(ctx: CheckContext, ca_file: str) -> None:
    stranger = trustme.CA()  # not in ca_file
    result = await check(
        ctx, issue(stranger, "localhost"), server_name="localhost", ca_file=ca_file
    )
    assert (result.status, result.reason) == (Status.CRITICAL, "untrusted: unknown CA")
    assert result.values["valid"] == 0.0
    assert result.values["days_left"] == pytest.approx(90.0, abs=1e-4)


async def test_system_trust_store_does_not_know_a_private_ca(
    ctx: CheckContext, ca: trustme.CA
) -> None:
    result = await check(ctx, issue(ca, "localhost"), server_name="localhost")
    assert (result.status, result.reason) == (Status.CRITICAL, "untrusted: unknown CA")


async def test_self_signed(ctx: CheckContext, ca_file: str, tmp_path: Path) -> None:
    # A server presenting a CA's own certificate: signed by itself, trusted by no one here.
    stranger = trustme.CA()
    cert, key = tmp_path / "self.pem", tmp_path / "self.key"
    stranger.cert_pem.write_to_path(str(cert))
    stranger.private_key_pem.write_to_path(str(key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with listening(context=context) as port:
        result = await make(port, server_name="localhost", ca_file=ca_file).run(ctx)
    assert (result.status, result.reason) == (Status.CRITICAL, "untrusted: self-signed certificate")
    assert result.values["valid"] == 0.0
    assert result.values["days_left"] > 0


async def test_connection_refused_is_unknown(ctx: CheckContext) -> None:
    result = await make(free_port()).run(ctx)
    assert (result.status, result.reason, result.values) == (
        Status.UNKNOWN,
        "connection refused",
        {},
    )


async def test_not_tls_is_unknown(ctx: CheckContext) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n" * 20)
        await writer.drain()
        writer.close()

    async with listening(banner) as port:
        result = await make(port).run(ctx)
    assert result.status is Status.UNKNOWN
    assert result.reason.startswith("TLS handshake failed: ")
    assert result.values == {}


async def test_silent_server_times_out(ctx: CheckContext) -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    async with listening(silent) as port:
        try:
            result = await make(port, timeout="300ms").run(ctx)
        finally:
            release.set()  # lets the handler finish, so the server stops promptly
    assert (result.status, result.reason) == (Status.UNKNOWN, "timeout after 0.27s")
