"""HTTP/1.1 on the wire: a request's bytes, built once, and responses parsed by llhttp
(httptools), one at a time on a kept-alive connection."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, cast

import httptools
from aiohttp.http import SERVER_SOFTWARE
from yarl import URL

from daemon.clients.lean_http.errors import BodyIncomplete, MalformedResponse

# What aiohttp sends unless told otherwise, so a server sees the same request from either
# client (no brotli or zstd: this client decodes gzip and deflate only).
_DEFAULT_HEADERS: Final = {
    "accept": ("Accept", "*/*"),
    "accept-encoding": ("Accept-Encoding", "gzip, deflate"),
    "user-agent": ("User-Agent", SERVER_SOFTWARE),
}
# Request headers that change the framing, the connection's life or the encodings to decode:
# a request carrying one stays with aiohttp.
_KEPT_FOR_AIOHTTP: Final = frozenset(
    {"connection", "content-length", "transfer-encoding", "expect", "upgrade", "te"}
    | {"accept-encoding", "keep-alive", "proxy-connection"}
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# As aiohttp's response parser: at most 128 header fields; here also 64 KiB of them in all.
MAX_HEADERS: Final = 128
MAX_HEAD_BYTES: Final = 1 << 16

Method = Literal["GET", "HEAD"]
PoolKey = tuple[str, str, int]  # scheme, host, port: one pool each


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A GET or HEAD whose bytes are built once, when the config is loaded."""

    method: Method
    scheme: str
    host: str  # as resolved and as the TLS server name (IDNA, no brackets)
    port: int
    data: bytes
    key: PoolKey  # (scheme, host, port): the pool its connections come from
    head_only: bool  # a HEAD: the response has no body, whatever its framing says

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def prepare(
    method: str, url: URL | str, headers: Mapping[str, str] | None = None
) -> PreparedRequest | None:
    """The request's bytes, or None when this client does not do what it asks (another
    method, credentials in the URL, a header that changes framing or encodings)."""
    url = URL(url) if isinstance(url, str) else url
    if method not in ("GET", "HEAD") or url.scheme not in _DEFAULT_PORTS:
        return None
    host, port = url.raw_host, url.port
    if not host or port is None or url.raw_user is not None or url.raw_password is not None:
        return None
    given = {name.lower(): (name, value) for name, value in (headers or {}).items()}
    if given.keys() & _KEPT_FOR_AIOHTTP:
        return None
    for name, value in given.values():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            return None  # config validation refuses these; never put them on the wire
    netloc = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[url.scheme]:
        netloc = f"{netloc}:{port}"
    fields = {"host": ("Host", netloc)} | _DEFAULT_HEADERS | given
    lines = [f"{method} {url.raw_path_qs} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in fields.values()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    key = (url.scheme, host, port)
    verb = cast(Method, method)  # checked above
    return PreparedRequest(verb, url.scheme, host, port, data, key, verb == "HEAD")


@dataclass(slots=True)
class Response:
    """Status, header fields as received, and the body when it was asked for and fit."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes | None
    oversized: bool = False  # the body was larger than the limit: `body` is None

    def header(self, name: str) -> str | None:
        """The first field of that name, decoded as latin-1."""
        wanted = name.lower().encode("latin-1")
        for field_name, value in self.headers:
            if field_name.lower() == wanted:
                return value.decode("latin-1")
        return None


class _Stop(Exception):
    """Raised in a parser callback to stop reading (a body over the limit)."""


# Reader states, in order.
WAITING: Final = 0  # no response byte yet, or only informational (1xx) responses
HEAD: Final = 1  # status line and header fields read; the body may follow
COMPLETE: Final = 2  # the whole message read


class ResponseReader:
    """Feeds one connection's bytes to llhttp and collects the response to the request in
    flight. llhttp is as lenient as aiohttp's response parser (header values, a bare LF,
    spaces after a chunk size) and strict otherwise."""

    __slots__ = (
        "_bare",
        "_close_delimited",
        "_encoding",
        "_full",
        "_head_bytes",
        "_head_only",
        "_limit",
        "_parser",
        "_size",
        "body",
        "headers",
        "keep_alive",
        "keep_body",
        "oversized",
        "received",
        "state",
        "status",
    )

    def __init__(self) -> None:
        self._full = self._new_parser(with_headers=True)
        self._bare: httptools.HttpResponseParser | None = None
        self._parser = self._full
        self.start(head_only=False, keep_body=False, limit=0)

    def _new_parser(self, *, with_headers: bool) -> httptools.HttpResponseParser:
        # httptools calls back only what the object it is given has: without `on_header`
        # the header fields cost nothing (six Python calls a response from nginx).
        callbacks = self if with_headers else _Bare(self)
        parser = httptools.HttpResponseParser(callbacks)
        parser.set_dangerous_leniencies(
            lenient_headers=True,
            lenient_optional_cr_before_lf=True,
            lenient_spaces_after_chunk_size=True,
        )
        return parser

    def start(self, *, head_only: bool, keep_body: bool, limit: int, headers: bool = True) -> None:
        """Expect the response to a new request. Without `headers` (and `keep_body`) the
        header fields are not collected: the response's `headers` stays empty."""
        if headers or keep_body:
            self._parser = self._full
        else:
            if self._bare is None:
                self._bare = self._new_parser(with_headers=False)
            self._parser = self._bare
        self._head_only = head_only
        self.keep_body = keep_body
        self._limit = limit
        self.state = WAITING
        self.received = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self._size = 0
        self._head_bytes = 0
        self._encoding = b""
        self._close_delimited = False
        self.oversized = False
        self.keep_alive = False

    def feed(self, data: bytes) -> None:
        """Parse what arrived. Raises MalformedResponse for what llhttp refuses; a body over
        the limit stops the reading with `oversized` set (the connection cannot be reused)."""
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, MalformedResponse):
                raise cause from None
            if not isinstance(cause, _Stop):
                raise
        except httptools.HttpParserError as exc:
            raise MalformedResponse(_llhttp_reason(exc)) from None
        if self._head_only and self.state == HEAD:
            # A response to HEAD has no body, whatever its framing says; llhttp cannot be told,
            # so the next response starts on a fresh parser.
            self.state = COMPLETE
            self.keep_alive = self._parser.should_keep_alive()
            fresh = self._new_parser(with_headers=self._parser is self._full)
            if self._parser is self._full:
                self._full = fresh
            else:
                self._bare = fresh
            self._parser = fresh

    def eof(self) -> None:
        """The connection closed: a body delimited by the close ends here."""
        if self.state == HEAD and self._close_delimited and not self.oversized:
            self.state = COMPLETE
            self.keep_alive = False

    def response(self) -> Response:
        """The response as read so far (the head, or the whole message)."""
        body = None
        if self.keep_body and not self.oversized and self.state == COMPLETE:
            body = _decode(b"".join(self.body), self._encoding, self._limit)
            if body is None:
                self.oversized = True
        return Response(self.status, self.headers, body, self.oversized)

    # -- llhttp callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.state == COMPLETE:  # bytes after the response: do not reuse the connection
            self.keep_alive = False
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if len(self.headers) >= MAX_HEADERS or self._head_bytes > MAX_HEAD_BYTES:
            raise MalformedResponse("header fields too large")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the response proper follows
            self.headers = []
            return
        self.status = status
        self.state = HEAD
        if self._parser is self._bare:
            return  # no fields to read the framing from: the body is read to its end or cut
        length = None
        chunked = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length = int(value.strip() or b"0")  # llhttp has checked it is a number
            elif lowered == b"transfer-encoding":
                chunked = chunked or b"chunked" in value.lower()
            elif lowered == b"content-encoding":
                self._encoding = value.strip().lower()
        bodiless = self._head_only or status in (204, 304)
        self._close_delimited = not bodiless and length is None and not chunked
        if length is not None and length > self._limit and not bodiless:
            self.oversized = True
            raise _Stop

    def on_body(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._limit:
            self.oversized = True
            raise _Stop
        if self.keep_body:
            self.body.append(chunk)

    def on_message_complete(self) -> None:
        if self.state == HEAD:
            self.state = COMPLETE
            self.keep_alive = self._parser.should_keep_alive()


class _Bare:
    """What llhttp calls back when the header fields are not wanted: no `on_header`."""

    __slots__ = ("on_body", "on_headers_complete", "on_message_begin", "on_message_complete")

    def __init__(self, reader: ResponseReader) -> None:
        self.on_message_begin = reader.on_message_begin
        self.on_headers_complete = reader.on_headers_complete
        self.on_body = reader.on_body
        self.on_message_complete = reader.on_message_complete


def _llhttp_reason(exc: Exception) -> str:
    """llhttp's own words (fixed texts, never the server's bytes)."""
    if isinstance(exc, httptools.HttpParserInvalidStatusError) or str(exc).startswith(
        "Expected HTTP/"
    ):
        return "invalid status line"
    reason = str(exc).strip().rstrip(".") or type(exc).__name__
    return reason[0].lower() + reason[1:] if reason[:1].isupper() else reason


def _decode(body: bytes, encoding: bytes, limit: int) -> bytes | None:
    """The body decoded as aiohttp does (gzip, deflate with or without its zlib header), or
    None when the decoded body is over `limit` bytes."""
    if encoding not in (b"gzip", b"x-gzip", b"deflate") or not body:
        return body
    wbits = 16 + zlib.MAX_WBITS if encoding != b"deflate" else zlib.MAX_WBITS
    if encoding == b"deflate" and (len(body) < 2 or (body[0] & 0x0F) != 8):
        wbits = -zlib.MAX_WBITS  # raw deflate, no zlib header
    decoder = zlib.decompressobj(wbits)
    try:
        decoded = decoder.decompress(body, limit + 1)
    except zlib.error:
        raise BodyIncomplete from None
    if len(decoded) > limit:
        return None
    if not decoder.eof:
        raise BodyIncomplete
    return decoded
