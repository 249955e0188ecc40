"""One daemon per SQLite state directory: an exclusive lock on `runbookd.lock` in it.

Two daemons on one state directory would both run the rules and act on every incident, and
restore, page and prune behind each other's backs. The lock is flock(2), tried without waiting
and held through an open file for the daemon's life; the kernel drops it when the process
ends, however it ends, so a crash never leaves a stale lock to clear by hand. The file holds
the holder's pid, for the message a second daemon prints.

Only the long-running daemon (`runbookd run`) takes it: it is the one that writes and acts.
`runbookd once` never opens the store, and the CLI's read commands (`incidents`, `silence`)
ask the running daemon's API, so neither is ever blocked by it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "runbookd.lock"


class StateDirInUse(Exception):
    """Another process holds the state directory's lock; the message names both."""


class StateDirLock:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now or raise StateDirInUse; OSError if the directory or the file
        cannot be made or opened. Creates the directory."""
        if self._fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        # Not inherited by the commands remediations run (O_CLOEXEC, Python's default too):
        # a child outliving the daemon would otherwise keep the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            by = f" (pid {holder})" if holder is not None else ""
            raise StateDirInUse(
                f"the state directory {self.directory} is in use by another runbookd{by}: "
                "one daemon per state directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Closing the file drops the lock. The file stays: removing it would let a third
        daemon lock a new file while a second one still waits on the old."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _holder(fd: int) -> int | None:
    """The pid the holder wrote; None if it has not yet or the file says something else."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    return None
