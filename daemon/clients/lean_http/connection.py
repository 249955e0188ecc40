"""One kept-alive HTTP/1.1 connection: an asyncio Protocol that sends one request at a time
and answers it through a future.

The deadline's timer is lazy: armed when a request finds none, and left running when the
request ends; when it fires it times out the request in flight if that one's deadline has
passed, re-arms for it if not, and lapses on an idle connection. Requests on a busy
connection thus set no timer of their own (creating and cancelling one was 2 µs a request)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from daemon.clients.lean_http.errors import LeanHttpError, ServerDisconnected
from daemon.clients.lean_http.wire import COMPLETE, HEAD, PreparedRequest, Response, ResponseReader

if TYPE_CHECKING:
    from daemon.clients.lean_http.pool import Pool

# A timer may fire up to a millisecond early (the loop's clock resolution): that close counts.
TIMER_SLACK = 0.001


class Connection(asyncio.Protocol):
    """Owned by its pool: idle there, or busy with one request. When the caller did not ask
    for the body, the answer goes out with the head and the connection reads the rest of the
    body on its own (until the same deadline) before it is idle again."""

    __slots__ = (
        "_deadline",
        "_in_flight",
        "_loop",
        "_pool",
        "_reader",
        "_timer",
        "_timer_at",
        "_transport",
        "_waiter",
        "closed",
        "idle_since",
        "served",
    )

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._reader = ResponseReader()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._in_flight = False  # from the write until the response is read whole
        self.closed = False
        self.idle_since = 0.0
        self.served = 0  # responses read whole on this connection

    # -- the caller's side -------------------------------------------------------------------

    def send(
        self,
        request: PreparedRequest,
        *,
        keep_body: bool,
        limit: int,
        deadline: float,
        headers: bool = True,
    ) -> asyncio.Future[Response]:
        """Write the request; the future answers it (or fails: LeanHttpError, TimeoutError)."""
        waiter: asyncio.Future[Response] = self._loop.create_future()
        if self.closed or self._transport is None:
            waiter.set_exception(ServerDisconnected(unanswered=True))
            return waiter
        self._waiter = waiter
        self._in_flight = True
        self._deadline = deadline
        self._reader.start(
            head_only=request.head_only, keep_body=keep_body, limit=limit, headers=headers
        )
        timer = self._timer
        if timer is None or deadline < self._timer_at:
            if timer is not None:
                timer.cancel()
            self._arm(deadline)
        self._transport.write(request.data)
        return waiter

    def abort(self) -> None:
        """Close now, without a goodbye: the request in flight (if any) is abandoned."""
        self.closed = True
        self._in_flight = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()
        self._pool.forget(self)

    def usable(self) -> bool:
        return not self.closed and self._transport is not None and not self._transport.is_closing()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if not self._in_flight:  # nothing asked: the server talks out of turn
            self.abort()
            return
        try:
            reader.feed(data)
        except LeanHttpError as exc:
            self._fail(exc)
            self.abort()
            return
        if reader.state == COMPLETE:
            self._complete()
        elif reader.oversized:  # the body went over the limit: no use reading on
            self._answer(reader.response())
            self.abort()
        elif reader.state == HEAD and not reader.keep_body:
            self._answer(reader.response())

    def eof_received(self) -> bool:
        return False  # close the transport: a half-closed HTTP connection is done

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reader = self._reader
        if self._in_flight:
            reader.eof()
            if reader.state == COMPLETE:  # a body delimited by the close
                self._complete()
            else:
                self._fail(ServerDisconnected(unanswered=not reader.received))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        self._pool.forget(self)

    # -- inside ------------------------------------------------------------------------------

    def _answer(self, response: Response) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _complete(self) -> None:
        self._in_flight = False
        reader = self._reader
        try:
            response = reader.response()
        except LeanHttpError as exc:  # a body that does not decode
            self._fail(exc)
            self.abort()
            return
        self.served += 1
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        elif waiter is not None and waiter.cancelled():
            self.abort()  # the caller gave up: do not guess where it left the connection
            return
        if reader.keep_alive and not self.closed:
            self._pool.release(self)
        else:
            self.abort()

    def _arm(self, at: float) -> None:
        self._timer = self._loop.call_at(at, self._on_timer)
        self._timer_at = at

    def _on_timer(self) -> None:
        self._timer = None
        if not self._in_flight:
            return  # idle: the timer lapses until the next request
        if self._loop.time() < self._deadline - TIMER_SLACK:
            self._arm(self._deadline)  # armed for an earlier request: on to this one's deadline
            return
        self._fail(TimeoutError())
        self.abort()
