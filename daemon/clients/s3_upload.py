"""A stream of unknown length into one S3 object, by multipart upload, in bounded memory.

Written here rather than through aioboto3's `upload_fileobj` because a cancelled upload
must not leave parts behind: `upload_fileobj` aborts on an error but not when its task is
cancelled (a timeout, a shutdown), and then leaves its part uploaders running. Here the
object exists only once CompleteMultipartUpload succeeds; anything else (an error, a
cancellation, the producer failing) cancels the parts in flight and aborts the upload, so no
partial object is ever visible. A process killed outright cannot abort: the bucket's
lifecycle rule `AbortIncompleteMultipartUpload` is the backstop for that.

Memory: the part being filled plus at most `in_flight` parts uploading.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from types import TracebackType
from typing import Any

from daemon.clients.s3 import s3_errors

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
MAX_PARTS = 10_000  # S3's maximum part number
ABORT_TIMEOUT = 30.0


class TooManyParts(Exception):
    """The stream needs more than MAX_PARTS parts of `part_size`."""


class MultipartUpload:
    """`async with MultipartUpload(...) as upload: await upload.write(data); ...;
    await upload.complete()`. Leaving the block without complete() aborts the upload."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        part_size: int,
        in_flight: int,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.part_size = part_size
        self.in_flight = in_flight
        self.extra = extra or {}
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.upload_id: str | None = None
        self.completed: dict[str, Any] | None = None
        self.aborted = False
        self.abort_error: BaseException | None = None
        self._part = io.BytesIO()  # the part being filled
        self._parts: dict[int, str] = {}  # part number -> ETag
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_part = 1

    async def __aenter__(self) -> MultipartUpload:
        created = await self.client.create_multipart_upload(
            Bucket=self.bucket, Key=self.key, **self.extra
        )
        self.upload_id = str(created["UploadId"])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.completed is None:
            await self._abort()

    def room(self) -> int:
        """How many bytes the current part still takes: read at most this much next."""
        return self.part_size - self._part.tell()

    async def write(self, data: bytes) -> None:
        """Take `data`; once a part is full, start uploading it (waiting first while
        `in_flight` parts are uploading). Raises the first part's failure."""
        self.sha256.update(data)
        self.bytes += len(data)
        view = memoryview(data)
        while view:
            taken = view[: self.room()]
            self._part.write(taken)
            view = view[len(taken) :]
            if self.room() <= 0:
                await self._send()

    async def complete(self) -> dict[str, Any]:
        """Upload the last part and complete the object: from now on it exists."""
        if self._part.tell() or self._next_part == 1:
            await self._send()  # the last part may be short, even empty
        await self._wait(0)
        parts = [{"ETag": etag, "PartNumber": n} for n, etag in sorted(self._parts.items())]
        self.completed = await self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )
        return self.completed

    async def _send(self) -> None:
        await self._wait(self.in_flight - 1)
        number = self._next_part
        if number > MAX_PARTS:
            raise TooManyParts(f"more than {MAX_PARTS} parts of {self.part_size} bytes")
        self._next_part += 1
        # The part is uploaded from the file object it was written into (no copy); aiohttp
        # sends a file object in chunks, where bytes would go in one write.
        body, self._part = self._part, io.BytesIO()
        body.seek(0)
        task = asyncio.create_task(self._upload(number, body))
        self._tasks.add(task)

    async def _upload(self, number: int, body: io.BytesIO) -> None:
        sent = await self.client.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=body,
        )
        self._parts[number] = str(sent["ETag"])

    async def _wait(self, at_most: int) -> None:
        """Until no more than `at_most` parts are uploading; raise a part's failure."""
        while len(self._tasks) > at_most:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            self._tasks -= done
            for task in done:
                task.result()  # raises the part's failure

    async def _abort(self) -> None:
        """Cancel the parts in flight, then abort: S3 drops the parts it has stored. Bounded,
        and never raising: the failure that brought us here is the one to report."""
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        # Their outcome no longer matters, only that none is still running.
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.upload_id is None:
            return
        try:
            async with asyncio.timeout(ABORT_TIMEOUT):
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
                )
            self.aborted = True
        except s3_errors() as exc:
            self.abort_error = exc
        self._part = io.BytesIO()
