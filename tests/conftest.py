from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from daemon.clock import ManualClock
from remediations.base import RemediationContext


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def ctx(session: aiohttp.ClientSession, clock: ManualClock) -> RemediationContext:
    """What a remediation gets; a module overriding `clock` (autojump) changes it here too."""
    return RemediationContext(session=session, clock=clock)
