"""The JSON-lines protocol between the harness and its Python worker processes.

A worker reads one JSON command per line on stdin and answers one JSON line on stdout, so
the harness can read its counters at the exact edges of a measured window without the
worker serving HTTP (which would add to the CPU being measured).
"""

from __future__ import annotations

import asyncio
import json
import select
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from bench.procs import BenchError, Proc

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


async def serve_commands(handle: Handler) -> None:
    """Answer commands from stdin until "quit" or end of input (worker side)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if command.get("op") == "quit":
            break
        answer = await handle(command)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def ask(proc: Proc, command: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send a command to a worker and wait (bounded) for its answer (harness side)."""
    stdin, stdout = proc.popen.stdin, proc.popen.stdout
    if stdin is None or stdout is None:
        raise BenchError(f"{proc.name} has no pipes")
    try:
        stdin.write((json.dumps(command) + "\n").encode())
        stdin.flush()
    except BrokenPipeError:
        raise BenchError(f"{proc.name} exited:\n{proc.tail()}") from None
    ready, _, _ = select.select([stdout], [], [], timeout)
    if not ready:
        raise BenchError(f"{proc.name}: no answer to {command.get('op')} within {timeout:g}s")
    line = stdout.readline()
    if not line:
        raise BenchError(f"{proc.name} exited:\n{proc.tail()}")
    answer: dict[str, Any] = json.loads(line)
    return answer
