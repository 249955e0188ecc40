"""A backup streamed from S3 into psql or pg_restore: downloaded in chunks, hashed as it
arrives, decompressed in bounded steps (.sql.gz), written to the tool's stdin with
backpressure. Nothing is written to disk; memory holds a chunk or two.

The checksum is known only once the whole object is read, so when the restore fails first
(a gzip error, psql stopping at an error) the rest is still read and hashed: a corrupt
backup is then reported as such, not only by its symptom.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.clients.processes import SpawnError, describe_exit, streaming_process
from daemon.clients.s3 import describe_s3_failure, is_lasting, s3_errors
from remediations.backups import Failed, error_line

DOWNLOAD_CHUNK = 1 << 20
# At most this much SQL is made from one step of decompression, so one chunk of a highly
# compressed dump never becomes hundreds of megabytes at once.
INFLATE_STEP = 4 << 20
GZIP = 16 + zlib.MAX_WBITS  # a gzip header and trailer, not a raw zlib stream


class GunzipStream:
    """gzip, fed in chunks, giving out at most INFLATE_STEP bytes per step. Several gzip
    members one after the other are one stream, as gunzip reads them."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(GZIP)

    @property
    def ended(self) -> bool:
        """The last member read so far is complete: False for a truncated stream."""
        return self._inflate.eof

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Raises zlib.error for data that is not gzip, or corrupt."""
        while data:
            if self._inflate.eof:  # another member follows
                self._inflate = zlib.decompressobj(GZIP)
            out = self._inflate.decompress(data, INFLATE_STEP)
            if out:
                yield out
            data = self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail
        while not self._inflate.eof and (out := self._inflate.decompress(b"", INFLATE_STEP)):
            yield out  # output pending from input already taken (a long match)


@dataclass(slots=True)
class Restored:
    """What streaming a backup into a tool did. `failures` say what went wrong, the most
    telling first; the checksum is compared by the caller."""

    sha256: str = ""
    downloaded: int = 0
    restored: int = 0
    failures: list[str] = field(default_factory=list)


async def stream_restore(
    client: Any,
    bucket: str,
    key: str,
    argv: Sequence[str],
    env: dict[str, str],
    *,
    gzipped: bool,
    request_timeout: float,
) -> Restored:
    """Download `key` into `argv`'s stdin. Failed for what stops the drill outright (the
    store unreachable, the tool missing); a bad backup is told in `failures`."""
    done = Restored()
    digest = hashlib.sha256()
    inflate = GunzipStream() if gzipped else None
    try:
        async with streaming_process(argv, env=env, stdin=True) as tool:
            body = (await client.get_object(Bucket=bucket, Key=key))["Body"]
            feeding = True
            async with body:
                while chunk := await body.read(DOWNLOAD_CHUNK):
                    digest.update(chunk)
                    done.downloaded += len(chunk)
                    if feeding:
                        feeding = await _feed(tool, inflate, chunk, done)
            if feeding and inflate is not None and not inflate.ended:
                done.failures.append("gzip: the stream ends early (a truncated backup)")
                feeding = False
            if not feeding and done.failures:
                tool.kill()  # never let a tool finish on input we know is bad
                await tool.finish()
            else:
                code = await tool.finish()
                if code != 0:
                    reason = error_line(tool.stderr)
                    done.failures.append(f"{argv[0]} {describe_exit(code)}: {reason}")
    except SpawnError as exc:
        raise Failed(str(exc), False) from None
    except s3_errors() as exc:
        reason = f"downloading {key}: {describe_s3_failure(exc, request_timeout)}"
        raise Failed(reason, not is_lasting(exc)) from None
    done.sha256 = digest.hexdigest()
    return done


async def _feed(tool: Any, inflate: GunzipStream | None, chunk: bytes, done: Restored) -> bool:
    """Write one downloaded chunk to the tool; False once nothing more should be written."""
    try:
        for piece in inflate.feed(chunk) if inflate is not None else (chunk,):
            tool.stdin.write(piece)
            await tool.stdin.drain()
            done.restored += len(piece)
    except zlib.error as exc:
        done.failures.append(f"gzip: {exc} (a corrupt backup)")
        return False
    except (BrokenPipeError, ConnectionResetError):
        return False  # the tool stopped reading: its exit status says why
    return True
