"""Unit tests stay inside the test process: no socket to anything (loopback included) and no
child process. One that needs either belongs in tests/integration or tests/e2e; this fails it
at the first attempt, where a drift would otherwise only show as a slower `make check`."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from typing import NoReturn

import pytest


def refuse(what: str) -> Callable[..., NoReturn]:
    def refused(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"a unit test may not {what}: it belongs in integration/ or e2e/")

    return refused


@pytest.fixture(autouse=True)
def in_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for method in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, method, refuse(f"{method} a socket"))
    # asyncio's subprocesses start through Popen too.
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("start a process"))
