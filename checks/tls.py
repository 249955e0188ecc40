"""`tls` check: does host:port present a certificate that verifies, and for how much longer?

Unreachable is UNKNOWN, not CRITICAL: without a handshake there is no certificate to judge,
and availability is the http check's to report. A certificate that fails verification is
read again over an unverifying connection, so its expiry is still reported.

cryptography, which reads the certificate, is imported on first use, not with the module.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from checks.base import CHECKS, CheckConfig, CheckContext, CheckResult, Stateless
from daemon.clients.timeouts import request_timeout
from daemon.core.models import Status

if TYPE_CHECKING:
    from cryptography import x509

VALUE_NAMES = frozenset({"days_left", "valid", "expires_at"})
DAY = 86400.0

# OpenSSL X509_V_ERR_* codes, as ssl.SSLCertVerificationError.verify_code carries them.
_NOT_YET_VALID, _EXPIRED, _REVOKED = 9, 10, 23
_SELF_SIGNED = frozenset({18, 19})  # the leaf itself / a root in the chain we do not trust
_UNKNOWN_ISSUER = frozenset({2, 20, 21})
_NAME_MISMATCH = frozenset({62, 64})  # hostname / IP address

Host = Annotated[str, StringConstraints(pattern=r"^[^\s/]+$", max_length=253)]


class TlsCheckConfig(CheckConfig):
    """A TLS handshake with host:port: `days_left` until the certificate expires,
    `expires_at` (unix seconds), and `valid` (1 when the chain and the name verify). A
    certificate that fails verification is CRITICAL, and read again without verifying so its
    expiry is still reported; fewer than `warn_days` left is WARN. Unreachable is UNKNOWN:
    without a handshake there is no certificate to judge."""

    example: ClassVar[str] = """
        checks:
          certificate:
            type: tls
            host: app.example.com
            interval: 6h
            warn_days: 21
        """

    type: Literal["tls"]
    host: Host = Field(description="The host name or address to connect to.")
    port: int = Field(443, ge=1, le=65535, description="The TCP port.")
    server_name: Host | None = Field(
        None, description="Sent as SNI and verified against the certificate; default: `host`."
    )
    ca_file: Path | None = Field(
        None, description="A PEM bundle trusted instead of the system's CAs (a private CA)."
    )
    warn_days: float = Field(14.0, gt=0, description="Fewer days left than this is WARN.")

    def value_names(self) -> frozenset[str]:
        return VALUE_NAMES


def _verifying_context(ca_file: Path | None) -> ssl.SSLContext | str:
    """The context, or why it cannot be built (reported by every run, never raised)."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as exc:
        return f"cannot load ca_file {ca_file}: {_ssl_reason(exc)}"
    except OSError as exc:
        return f"cannot load ca_file {ca_file}: {exc.strerror or exc}"


def _reading_context() -> ssl.SSLContext:
    """Only to read a certificate that failed verification; nothing is sent over it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@CHECKS.register
class TlsCheck(Stateless):
    type: ClassVar[str] = "tls"
    Config: ClassVar[builtins.type[CheckConfig]] = TlsCheckConfig

    def __init__(self, name: str, config: TlsCheckConfig) -> None:
        self.name = name
        self.config = config
        self._server_name = config.server_name or config.host
        self._timeout = request_timeout(config.timeout)
        self._verifying = _verifying_context(config.ca_file)
        self._reading = _reading_context()

    async def run(self, ctx: CheckContext) -> CheckResult:
        if isinstance(self._verifying, str):
            return CheckResult.unknown(self._verifying)
        deadline = asyncio.get_running_loop().time() + self._timeout
        problem: ssl.SSLCertVerificationError | None = None
        try:
            try:
                der = await self._peer_certificate(self._verifying, deadline)
            except ssl.SSLCertVerificationError as exc:
                problem = exc
                der = await self._peer_certificate(self._reading, deadline)
        except OSError as exc:  # TimeoutError and ssl.SSLError among them
            if problem is None:
                return CheckResult.unknown(self._connect_failure(exc))
            der = None  # verification failed, and the certificate could not be read again
        return self._judge(der, problem, ctx.clock.now())

    async def _peer_certificate(self, context: ssl.SSLContext, deadline: float) -> bytes | None:
        async with asyncio.timeout_at(deadline):
            _, writer = await asyncio.open_connection(
                self.config.host,
                self.config.port,
                ssl=context,
                server_hostname=self._server_name,
                ssl_shutdown_timeout=self._timeout,
            )
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            return ssl_object.getpeercert(binary_form=True) if ssl_object else None
        finally:
            writer.close()
            # A polite close_notify; the certificate is ours whatever the peer does now.
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await writer.wait_closed()

    def _judge(
        self, der: bytes | None, problem: ssl.SSLCertVerificationError | None, now: float
    ) -> CheckResult:
        cert = _load(der)
        values: dict[str, float] = {"valid": 0.0}
        if cert is not None:
            expires_at = cert.not_valid_after_utc.timestamp()
            values |= {"expires_at": expires_at, "days_left": (expires_at - now) / DAY}
        if problem is not None:
            return CheckResult(Status.CRITICAL, values, self._verify_failure(problem, cert))
        if cert is None:
            return CheckResult.unknown("no certificate received")
        # Judged by our clock too, which may be ahead of OpenSSL's check (and is in tests).
        if values["days_left"] <= 0:
            return CheckResult(Status.CRITICAL, values, "certificate expired")
        values["valid"] = 1.0
        if values["days_left"] < self.config.warn_days:
            reason = f"certificate expires in {values['days_left']:.1f} days"
            return CheckResult(Status.WARN, values, reason)
        return CheckResult(Status.OK, values)

    def _verify_failure(
        self, exc: ssl.SSLCertVerificationError, cert: x509.Certificate | None
    ) -> str:
        code = exc.verify_code
        if code == _EXPIRED:
            return "certificate expired"
        if code == _NOT_YET_VALID:
            return "certificate not yet valid"
        if code == _REVOKED:
            return "certificate revoked"
        if code in _NAME_MISMATCH:
            names = _names(cert) if cert is not None else "another name"
            return f"hostname mismatch: cert is for {names}, not {self._server_name}"
        if code in _SELF_SIGNED:
            return "untrusted: self-signed certificate"
        if code in _UNKNOWN_ISSUER:
            return "untrusted: unknown CA"
        return f"verification failed: {exc.verify_message}"

    def _connect_failure(self, exc: OSError) -> str:
        if isinstance(exc, TimeoutError):
            return f"timeout after {self._timeout:g}s"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, socket.gaierror):
            return f"DNS lookup failed for {self.config.host}"
        if isinstance(exc, ssl.SSLError):
            return f"TLS handshake failed: {_ssl_reason(exc)}"
        if isinstance(exc, ConnectionError):
            return "connection closed during the TLS handshake"
        # Several addresses failing at once give a long message: keep the reason short.
        text = exc.strerror or str(exc) or type(exc).__name__
        return f"cannot connect: {text if len(text) <= 80 else text[:77] + '...'}"


def _ssl_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's WRONG_VERSION_NUMBER as "wrong version number"."""
    return (exc.reason or type(exc).__name__).replace("_", " ").lower()


def _load(der: bytes | None) -> x509.Certificate | None:
    from cryptography import x509

    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def _names(cert: x509.Certificate, shown: int = 3) -> str:
    """The names a certificate is for: its subjectAltName entries, else its common name."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName) + [
            str(ip) for ip in san.get_values_for_type(x509.IPAddress)
        ]
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if not names:
        return "no name"
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
