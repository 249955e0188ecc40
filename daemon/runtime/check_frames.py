"""The frames between the daemon and its check workers (daemon/runtime/check_workers.py).

Each frame is a 4-byte big-endian length and a payload. Worker -> daemon: `marshal` of
`(RESULTS, results, skipped)`, one frame per scheduler tick of the worker, where a result is
`(check, status, values, ended, duration, reason, due)` (`reason` None when empty) and
`skipped` the names of the checks whose run was skipped, once per skip. marshal is the
cheapest of what was measured for this shape (see bench/README.md) and round-trips unicode,
NaN and infinities exactly; it runs no code when loading, and a payload that is not the shape
above is refused (`BadFrame`).

Daemon -> worker: `pickle` of a command. The checks' configs are pydantic models (with
secrets); pickle is fine here because both ends are our own processes of one installation,
over a pipe nobody else holds: the worker never reads a frame from anywhere else.
"""

from __future__ import annotations

import marshal
import math
import pickle
import struct
from collections.abc import Iterable
from itertools import chain
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 64 << 20  # far above a batch of 20,000 results (~2 MB)

RESULTS = "results"
# Commands to a worker.
CHECKS = "checks"  # (CHECKS, {name: config}): the worker's whole set of checks, as reload does
RUN_NOW = "run_now"  # (RUN_NOW, name)
STOP = "stop"  # (STOP,)

Result = tuple[str, int, dict[str, float], float, float, str | None, float]

_STATUSES = {0, 1, 2, 3}  # daemon.core.models.Status: OK, WARN, CRITICAL, UNKNOWN


class BadFrame(ValueError):
    """A frame that is not what a worker writes: the worker is broken."""


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def encode_results(results: list[Result], skipped: list[str]) -> bytes:
    return frame(marshal.dumps((RESULTS, results, skipped)))


def decode_results(payload: bytes) -> tuple[list[Result], list[str]]:
    """The results and skips of one frame; BadFrame unless it has exactly that shape."""
    try:
        data = marshal.loads(payload)  # noqa: S302 -- data only, see above
    except (ValueError, EOFError, TypeError) as exc:
        raise BadFrame(f"not a results frame: {type(exc).__name__}: {exc}") from None
    if type(data) is not tuple or len(data) != 3:
        raise BadFrame("not a results frame")
    kind, results, skipped = data
    if kind != RESULTS or type(results) is not list or type(skipped) is not list:
        raise BadFrame("not a results frame")
    if not _only(skipped, str):
        raise BadFrame("a skipped check that is not a name")
    if results:
        _check_results(results)
    return results, skipped


def _only(items: Iterable[Any], *types: type) -> bool:
    return set(map(type, items)) <= set(types)


def _check_results(results: list[Any]) -> None:
    """By column, builtins over whole columns: 2.0 us per result with marshal's 0.5 (on a
    busy machine), where a Python loop over each result's fields took 5.7, at up to 20,000
    results a second."""
    if not _only(results, tuple) or set(map(len, results)) != {7}:
        raise BadFrame("a result that is not a 7-tuple")
    names, statuses, values, ended, duration, reasons, due = zip(*results, strict=True)
    if not _only(names, str) or not _only(statuses, int) or not set(statuses) <= _STATUSES:
        raise BadFrame("a result without a check name and a status")
    if not _only(values, dict) or not (
        _only(chain.from_iterable(map(dict.keys, values)), str)
        and _only(chain.from_iterable(map(dict.values, values)), float)
    ):
        raise BadFrame("a result whose values are not names -> floats")
    times = (*ended, *duration, *due)
    if not _only(times, float) or not all(map(math.isfinite, times)):
        raise BadFrame("a result without finite times")
    if not _only(reasons, str, type(None)):
        raise BadFrame("a result whose reason is not text")


def encode_command(command: tuple[Any, ...]) -> bytes:
    return frame(pickle.dumps(command, protocol=pickle.HIGHEST_PROTOCOL))


def decode_command(payload: bytes) -> tuple[Any, ...]:
    command = pickle.loads(payload)  # noqa: S301 -- from our own daemon only (see above)
    if type(command) is not tuple or not command:
        raise BadFrame("not a command")
    return command
