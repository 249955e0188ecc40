"""Requests a standby hands to the leader through the store (api/acts.py says which), and the
leader's loop that carries them out.

A standby leaves the act in the store, waits up to `wait` seconds for the leader's answer and
relays it. Without an answer in time, an operator's command is withdrawn and refused (503:
nothing was done, send it again), so it never takes effect long after its caller gave up;
alerts stay for whichever replica leads next (202). A request the leader took but did not
answer in time gets 504: it may have taken effect. Polling, not LISTEN/NOTIFY: notifications
need a session of their own, which transaction-pooling proxies do not give.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from daemon.api.acts import LASTING
from daemon.api.port import Answer
from daemon.core.clock import Clock
from daemon.pipeline.fence import Fence
from daemon.store.protocol import Fenced, Forwarded, Store

log = structlog.get_logger("runbookd.forwarding")

WAIT = 5.0  # a standby's wait for the leader's answer
ANSWER_POLL = 0.1  # how often a standby looks for it
TAKE_POLL = 0.2  # how often the leader looks for requests
BATCH = 50

Perform = Callable[[str, dict[str, Any]], Awaitable[Answer]]


class Forwarder:
    """A standby's half: hand an act over and wait for its answer."""

    def __init__(self, store: Store, clock: Clock, *, wait: float = WAIT) -> None:
        self.store = store
        self.clock = clock
        self.wait = wait

    async def forward(self, act: str, args: dict[str, Any]) -> Answer:
        try:
            item = await self.store.forward(act, args, self.clock.now())
        except Exception as exc:
            log.warning("cannot hand a request to the leader", act=act, error=_reason(exc))
            return Answer.error(
                503,
                "this replica is a standby and cannot reach the store to hand this request to "
                "the leader: nothing was done; send it again",
                {"Retry-After": "5"},
            )
        answer = await self._answer(item)
        if answer is not None:
            return answer
        waited = f"{self.wait:g} s"
        if act in LASTING:
            reason = f"no leader answered within {waited}: kept in the store for the leader"
            return Answer(202, {"queued": item, "reason": reason})
        if await self._withdrawn(item):
            return Answer.error(
                503,
                f"no leader answered within {waited}: nothing was done; send it again",
                {"Retry-After": "5"},
            )
        answer = await self._answer(item)
        if answer is not None:
            return answer
        return Answer.error(
            504,
            f"the leader took this request but did not answer within {2 * self.wait:g} s: "
            "it may have taken effect; look before sending it again",
        )

    async def _answer(self, item: int) -> Answer | None:
        deadline = self.clock.now() + self.wait
        while True:
            try:
                found = await self.store.collect_answer(item)
            except Exception:  # the store blinked: look again until the deadline
                found = None
            if found is not None:
                return Answer.from_json(found)
            left = deadline - self.clock.now()
            if left <= 0:
                return None
            await self.clock.sleep(min(ANSWER_POLL, left))

    async def _withdrawn(self, item: int) -> bool:
        try:
            return await self.store.withdraw_forwarded(item)
        except Exception:  # unknown: a leader may take it yet, so wait for its answer
            return False


class ForwardedRequests:
    """The leader's half: take what standbys left, under the fence, and answer it."""

    def __init__(self, store: Store, clock: Clock, fence: Fence, perform: Perform) -> None:
        self.store = store
        self.clock = clock
        self.fence = fence
        self.perform = perform
        self._reported = False

    async def serve(self) -> None:
        """Until cancelled."""
        while True:
            taken = await self._take()
            for item in taken:
                await self._answer(item)
            if len(taken) < BATCH:
                await self.clock.sleep(TAKE_POLL)

    async def _take(self) -> list[Forwarded]:
        try:
            async with self.store.batch():
                await self.fence.check()  # a replica that no longer leads takes nothing
                taken = await self.store.take_forwarded(BATCH)
        except Fenced:
            return []
        except Exception as exc:
            if not self._reported:
                log.warning("cannot take forwarded requests", error=_reason(exc))
                self._reported = True
            return []
        self._reported = False
        return taken

    async def _answer(self, item: Forwarded) -> None:
        try:
            answer = await self.perform(item.operation, item.args)
        except Exception:  # a bug: the standby's caller gets a 500, the log the traceback
            log.exception("forwarded request failed", act=item.operation, request=item.id)
            answer = Answer.error(500, "internal error")
        try:
            await self.store.answer_forwarded(item.id, answer.to_json())
        except Exception as exc:  # the standby's caller learns it may have taken effect
            log.warning("cannot answer a forwarded request", request=item.id, error=_reason(exc))


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
