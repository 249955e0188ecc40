"""Kept-alive connections to one (scheme, host, port): idle ones reused last-in first-out, at
most `max_idle` of them, none older than `keepalive_timeout`; new ones opened with
aiohappyeyeballs (IPv6 and IPv4 raced, as aiohttp does)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import aiohappyeyeballs

from daemon.clients.lean_http.connection import Connection
from daemon.clients.lean_http.errors import connect_failed

HAPPY_EYEBALLS_DELAY = 0.25  # aiohttp's
DNS_TTL = 10.0  # seconds an address lookup is reused, as aiohttp's connector caches it


class Pool:
    __slots__ = (
        "_addresses",
        "_busy",
        "_idle",
        "_keepalive",
        "_loop",
        "_max_idle",
        "_resolved_at",
        "_ssl",
        "host",
        "port",
    )

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        *,
        max_idle: int,
        keepalive_timeout: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._keepalive = keepalive_timeout
        self._loop = loop
        self._idle: list[Connection] = []
        self._busy: set[Connection] = set()
        self._addresses: list[aiohappyeyeballs.AddrInfoType] = []
        self._resolved_at = -DNS_TTL

    def take_idle(self) -> Connection | None:
        """The most recently used idle connection still fit for a request, if any."""
        idle = self._idle
        oldest = self._loop.time() - self._keepalive
        while idle:
            conn = idle.pop()
            if conn.usable() and conn.idle_since >= oldest:
                self._busy.add(conn)
                return conn
            conn.abort()
        return None

    async def connect(self) -> Connection:
        """A new connection (the caller bounds the time). Raises ConnectFailed."""
        try:
            addresses = await self._resolve()
            sock = await aiohappyeyeballs.start_connection(
                addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, loop=self._loop
            )
        except (OSError, RuntimeError) as exc:  # uvloop may raise RuntimeError
            raise connect_failed(exc, self.host) from None
        try:
            _, conn = await self._loop.create_connection(
                lambda: Connection(self, self._loop),
                sock=sock,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl is not None else None,
            )
        except (OSError, RuntimeError) as exc:  # ssl.SSLError is an OSError
            sock.close()
            raise connect_failed(exc, self.host) from None
        except BaseException:  # cancelled or timed out mid-handshake
            sock.close()
            raise
        self._busy.add(conn)
        return conn

    async def _resolve(self) -> list[aiohappyeyeballs.AddrInfoType]:
        if time.monotonic() - self._resolved_at < DNS_TTL and self._addresses:
            return self._addresses
        found = await self._loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        self._addresses = list(found)
        self._resolved_at = time.monotonic()
        return self._addresses

    def release(self, conn: Connection) -> None:
        """A connection done with its request, fit for another."""
        self._busy.discard(conn)
        if len(self._idle) >= self._max_idle:
            conn.abort()
            return
        conn.idle_since = self._loop.time()
        self._idle.append(conn)

    def forget(self, conn: Connection) -> None:
        """A connection that closed."""
        self._busy.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def close_idle(self, older_than: float) -> None:
        """Close the idle connections last used before `older_than` (loop time)."""
        for conn in [c for c in self._idle if c.idle_since < older_than]:
            conn.abort()

    def close(self) -> None:
        for conn in [*self._idle, *self._busy]:
            conn.abort()
        self._idle.clear()
        self._busy.clear()

    def open_connections(self) -> int:
        return len(self._idle) + len(self._busy)
