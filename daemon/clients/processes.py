"""Run a program from an argv list: never through a shell, in a session (and process group)
of its own, with bounded output, and a timeout that takes the whole group down.

Shared by the `command` remediation and the `nagios` check; `streaming_process` runs the
PostgreSQL tools whose output or input is streamed (`pg_backup`, `restore_drill`). The argv
always comes from the config; nothing here builds a command line out of text.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

OUTPUT_LIMIT = 4096
# How long a killed group may take to be reaped before we stop waiting for it.
KILL_WAIT = 5.0
# The daemon's own settings (API tokens among them) are not a child's business; the names are
# reserved for what runbookd itself hands to a child (the incident it acts on).
RESERVED_ENV_PREFIX = "RUNBOOKD_"


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """How a run went. `error` is set (and nothing else) when the program could not start."""

    exit_code: int | None = None  # negative: killed by that signal
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    duration: float = 0.0
    error: str | None = None


# --- config validation, shared by the models that hold an argv and an env -----------------


def check_argv(argv: list[str]) -> list[str]:
    if any("\0" in arg for arg in argv):
        raise ValueError("an argument contains a NUL byte")
    return argv


def check_env(env: dict[str, str]) -> dict[str, str]:
    for name, value in env.items():
        if "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"invalid environment variable {name!r}")
        if name.upper().startswith(RESERVED_ENV_PREFIX):
            raise ValueError(f"{name}: {RESERVED_ENV_PREFIX}* variables are set by runbookd")
    return env


# What a child inherits from the daemon: enough to find programs and speak the locale, never
# the daemon's secrets (routing keys, DSNs and tokens often come in through the environment).
# Anything else a command needs is given explicitly in its config's `env:`.
INHERITED_ENV = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME", "TMPDIR"})


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment from the daemon's (no secrets), plus `extra`."""
    inherited = {k: v for k, v in os.environ.items() if k in INHERITED_ENV or k.startswith("LC_")}
    return {**inherited, **extra}


# --- running --------------------------------------------------------------------------------


async def run_process(
    argv: Sequence[str],
    *,
    term_after: float,
    kill_grace: float = 2.0,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    output_limit: int = OUTPUT_LIMIT,
) -> ProcessResult:
    """Run `argv` with stdin from /dev/null and `env` added to `child_env`.

    After `term_after` seconds the group gets SIGTERM, then SIGKILL once `kill_grace` has
    passed, and the result says `timed_out` with the output so far. (Cancelling the caller
    instead kills the group at once and keeps nothing.) Output beyond `output_limit` bytes
    per stream is read and dropped, so the child never blocks on a full pipe.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=child_env(env or {}),
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        return ProcessResult(error=spawn_failure(argv[0], cwd, exc))
    out, err = _Capture(output_limit), _Capture(output_limit)
    timed_out = await _communicate(proc, out, err, term_after, kill_grace)
    return ProcessResult(
        exit_code=proc.returncode,
        stdout=out.text(),
        stderr=err.text(),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        timed_out=timed_out,
        duration=loop.time() - started,
    )


def spawn_failure(
    program: str, cwd: str | os.PathLike[str] | None, exc: OSError | ValueError
) -> str:
    """A short reason why `program` did not start."""
    if isinstance(exc, FileNotFoundError):
        if cwd is not None and str(exc.filename) == str(cwd):
            return f"working directory not found: {cwd}"
        return f"executable not found: {program}"
    if isinstance(exc, PermissionError):
        return f"permission denied running {program}"
    if isinstance(exc, OSError):
        return f"cannot run {program}: {exc.strerror or exc}"
    return f"cannot run {program}: {exc}"


def describe_exit(code: int | None) -> str:
    """ "exited with status 3" or "was killed by SIGKILL"."""
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class _Capture:
    """Keeps the first `limit` bytes of a stream but reads it all, so the child never blocks
    on a full pipe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            self.total += len(chunk)
            self.data += chunk[: max(0, self.limit - len(self.data))]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.data)

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", errors="replace")


async def _communicate(
    proc: asyncio.subprocess.Process,
    out: _Capture,
    err: _Capture,
    term_after: float,
    grace: float,
) -> bool:
    """Wait for exit and both pipes to close; True if `term_after` struck first."""
    try:
        async with asyncio.timeout(term_after):
            await asyncio.gather(out.drain(proc.stdout), err.drain(proc.stderr))
            await proc.wait()
        return False
    except TimeoutError:
        await _terminate_group(proc, grace)
        # Keep what the group wrote before it died; bounded in case a grandchild
        # escaped the group and still holds a pipe open.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(out.drain(proc.stdout), err.drain(proc.stderr))
        return True
    except asyncio.CancelledError:
        # The daemon is shutting down or gave up on us: leave nothing running behind, and
        # reap the child before going (bounded): one left unreaped outlives the event loop.
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(_wait(proc, KILL_WAIT))
        raise


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # ProcessLookupError: the group is already gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _terminate_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after `grace`."""
    _signal_group(proc.pid, signal.SIGTERM)
    await _wait(proc, grace)
    # Even if the leader obeyed, its children may not have: sweep the group.
    _signal_group(proc.pid, signal.SIGKILL)
    await _wait(proc, grace)


async def _wait(proc: asyncio.subprocess.Process, limit: float) -> None:
    """Bounded, because wait() also waits for our pipes to close, and a grandchild that
    left the process group can hold them open out of our reach."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            await proc.wait()


# --- streaming ----------------------------------------------------------------------------


class SpawnError(Exception):
    """The program did not start; the message says why (`spawn_failure`)."""


class StreamingProcess:
    """A running program whose stdout the caller reads, or whose stdin it writes, in chunks
    (a dump or a restore too large to hold); its stderr is kept, bounded, by a task."""

    def __init__(self, proc: asyncio.subprocess.Process, output_limit: int) -> None:
        self.proc = proc
        self._stderr = _Capture(output_limit)
        self._drain = asyncio.create_task(self._stderr.drain(proc.stderr))

    @property
    def stdout(self) -> asyncio.StreamReader:
        assert self.proc.stdout is not None, "started without stdout=True"
        return self.proc.stdout

    @property
    def stdin(self) -> asyncio.StreamWriter:
        assert self.proc.stdin is not None, "started without stdin=True"
        return self.proc.stdin

    @property
    def stderr(self) -> str:
        return self._stderr.text()

    async def finish(self) -> int:
        """Close stdin (end of input), wait for the exit and the end of stderr; the exit
        status (negative: killed by that signal)."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self.proc.stdin.wait_closed()
        code = await self.proc.wait()
        await self._drain
        return code

    def kill(self) -> None:
        """The whole group at once: what it would still write is of no use."""
        if self.proc.returncode is None:
            _signal_group(self.proc.pid, signal.SIGKILL)

    async def _close(self, grace: float) -> None:
        """Kill the group and let the pipes end: asyncio closes a process's transport only
        once every pipe is closed, and a stdout we stopped reading would stay open."""
        self.kill()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(grace):
                while self.proc.stdout is not None and await self.proc.stdout.read(1 << 20):
                    pass  # what the killed group had written: of no use
                await self.proc.wait()
        self._drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain


@contextlib.asynccontextmanager
async def streaming_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: bool = False,
    stdout: bool = False,
    buffer: int = 1 << 20,
    output_limit: int = OUTPUT_LIMIT,
) -> AsyncIterator[StreamingProcess]:
    """Start `argv` (its own session and process group, the minimal environment plus `env`)
    with the pipes asked for (else /dev/null). Leaving the block with the program still
    running (an error, a cancellation) kills its group. `buffer`: how much of its stdout
    may wait unread before the pipe pushes back."""
    pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=pipe if stdin else null,
            stdout=pipe if stdout else null,
            stderr=pipe,
            env=child_env(env or {}),
            start_new_session=True,
            limit=buffer,
        )
    except (OSError, ValueError) as exc:
        raise SpawnError(spawn_failure(argv[0], None, exc)) from None
    running = StreamingProcess(proc, output_limit)
    try:
        yield running
    finally:
        await running._close(KILL_WAIT)
