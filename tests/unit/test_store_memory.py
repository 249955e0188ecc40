"""The in-memory store the unit tests use keeps the same contract as the real stores."""

from __future__ import annotations

import pytest

from tests.memory_store import MemoryData, MemoryStore
from tests.store_contract import Reopen, StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def data(self) -> MemoryData:
        return MemoryData()

    @pytest.fixture
    def store(self, data: MemoryData) -> MemoryStore:
        return MemoryStore(data)

    @pytest.fixture
    def reopen(self, data: MemoryData) -> Reopen:
        async def _reopen() -> MemoryStore:
            return MemoryStore(data)

        return _reopen
