"""Fixtures several integration modules share."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.standin import StandIn
from tests.paths import BIN
from tests.pg import Database, fresh_database
from tests.utils import silent_server


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    """A PostgreSQL database of the test's own, dropped after it."""
    async with fresh_database() as database:
        yield database


@pytest.fixture
async def conn(db: Database) -> AsyncIterator[Any]:
    """A connection to the fresh database, for setting up data and reading it back."""
    connection = await db.connect()
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A loopback port that accepts connections and never answers."""
    async with silent_server() as port:
        yield port


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    """The stand-in docker, systemctl and pm2 (tests/bin) first on PATH, their log and state in
    tmp_path. They start with `#!/usr/bin/env python3`: the interpreter running the tests comes
    right after them on PATH, so they run under it."""
    python_dir = os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", os.pathsep.join([str(BIN), python_dir, os.environ["PATH"]]))
    return StandIn(tmp_path)
