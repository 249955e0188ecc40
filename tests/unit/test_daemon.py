"""The daemon gives the memory freed at startup back to the operating system."""

from __future__ import annotations

import ctypes

import pytest

from daemon.runtime.daemon import release_free_memory


def test_memory_freed_at_startup_goes_back_to_the_os(monkeypatch: pytest.MonkeyPatch) -> None:
    trimmed: list[int] = []

    class Glibc:
        def malloc_trim(self, pad: int) -> int:
            trimmed.append(pad)
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Glibc())
    release_free_memory()
    assert trimmed == [0]

    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())  # a libc without malloc_trim
    release_free_memory()
    assert trimmed == [0]
