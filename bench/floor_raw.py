"""The raw-protocol floor: the least an asyncio GET on a kept-alive connection can cost.

Each request's bytes are built once; a connection writes them, finds the end of the head,
reads the status and Content-Length by hand, waits for that many body bytes and answers a
future. No header parsing, no chunked bodies, no TLS, no timeouts: what is left is the event
loop, the system calls and one future per request. `bench/floor.py --client raw` uses it.
"""

from __future__ import annotations

import asyncio
import re
from typing import cast

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class RawConnection(asyncio.Protocol):
    def __init__(self, pool: RawPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.status = 0
        self.need = -1  # bytes of head and body in the buffer for the whole response

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def request(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.waiter = self.pool.loop.create_future()
        self.need = -1
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.need < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(buffer[9:12])
            found = _CONTENT_LENGTH.search(buffer, 0, end + 2)
            self.need = end + 4 + (int(found[1]) if found else 0)
        if len(buffer) < self.need:
            return
        del buffer[: self.need]
        waiter, self.waiter = self.waiter, None
        self.pool.idle.append(self)
        if waiter is not None and not waiter.done():
            waiter.set_result(self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool.idle:
            self.pool.idle.remove(self)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))


class RawPool:
    """Idle connections to one host, last in first out; a new one when none is idle."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.idle: list[RawConnection] = []

    async def get(self, data: bytes) -> int:
        if self.idle:
            conn = self.idle.pop()
        else:
            _, conn = await self.loop.create_connection(
                lambda: RawConnection(self), self.host, self.port
            )
        return await conn.request(data)

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


def request_bytes(host: str, port: int, target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
