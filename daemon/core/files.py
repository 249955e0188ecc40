"""Read a small file the config names (the config itself, a `*_file` secret), bounded.

Only a regular file is read: `/dev/zero` would never end, a FIFO would block until a writer
comes, a directory has no text. The file is opened without blocking (O_NONBLOCK, which a
FIFO needs to open at all without a writer) and checked with fstat on the open descriptor,
so what is checked is what is read; then at most `limit` bytes are read.
"""

from __future__ import annotations

import os
import stat


class FileRefused(ValueError):
    """The file cannot be read, is not a regular file, or is larger than allowed."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def format_size(size: int) -> str:
    """4194304 -> "4 MiB", 65536 -> "64 KiB"."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def read_regular_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; FileRefused saying why not."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FileRefused(f"cannot read: {exc.strerror or exc}") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            kind = next((name for test, name in _KINDS if test(status.st_mode)), "a special file")
            raise FileRefused(f"not a regular file ({kind})")
        if status.st_size > limit:
            raise FileRefused(too_large(status.st_size, limit))
        # The file may grow while it is read: one byte more than allowed tells.
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise FileRefused(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileRefused(too_large(len(data), limit))
    return data


def too_large(size: int, limit: int) -> str:
    """The message for a file or text of `size` bytes where at most `limit` are allowed."""
    return f"too large: {size:,} bytes, at most {format_size(limit)} allowed"


def _read_at_most(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
