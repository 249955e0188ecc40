"""S3 for the `s3_backup` check and the backup remediations (`pg_backup`, `s3_prune`,
`restore_drill`): where the backups are (a config model the configs share), one client per
run or per check, short reasons for failed calls, and listing a prefix.

aioboto3 and botocore are imported on first use, not with the module: the config models
register without them, and a daemon with nothing stored in S3 never loads them.
Credentials come from the config (`secret_access_key` or `secret_access_key_file`), else
from the default AWS chain (environment, profile, instance role); no reason or message made
here ever quotes them.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from daemon.clients.http import HttpUrl, describe_failure
from daemon.core.units import SecretsModel

# A backup's manifest (pg_backup writes one beside each backup): not a backup itself.
MANIFEST_SUFFIX = ".manifest.json"

# A bucket that does not exist, or credentials S3 refuses, as S3 names them.
_NO_BUCKET = frozenset({"NoSuchBucket"})
_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"})
_REJECTED = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)


class S3Location(SecretsModel):
    """Where backups are kept, and how to reach the store. A config model mixes it in."""

    bucket: str = Field(min_length=1, pattern=r"^[^/\s]+$", description="The bucket's name.")
    prefix: str = Field("", description="Only keys starting with this are backups.")
    endpoint_url: HttpUrl | None = Field(
        None, description="An S3-compatible store's URL; unset: AWS."
    )
    region: str = Field("us-east-1", min_length=1, description="The bucket's region.")
    access_key_id: SecretStr | None = Field(
        None,
        description="Unset, with the secret key: the default credential chain (environment, "
        "profile, instance role).",
    )
    secret_access_key: SecretStr | None = Field(None, description="Goes with `access_key_id`.")
    session_token: SecretStr | None = Field(None, description="For temporary credentials.")
    addressing_style: Literal["auto", "path", "virtual"] | None = Field(
        None,
        description="S3 addressing; default: `path` with `endpoint_url` (most S3-compatible "
        "stores), else `auto`.",
    )

    @model_validator(mode="after")
    def _whole_key_pair(self) -> S3Location:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        return self

    def where(self, key: str | None = None) -> str:
        return f"s3://{self.bucket}/{self.prefix if key is None else key}"

    def s3_secrets(self) -> list[str]:
        """What must never appear in a result or a log line."""
        found = (self.access_key_id, self.secret_access_key, self.session_token)
        return [secret.get_secret_value() for secret in found if secret is not None]


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def new_session(location: S3Location) -> Any:
    """E.g. AWS_PROFILE naming a missing profile raises here (one of `s3_errors`)."""
    from aioboto3.session import Session

    return Session(  # type: ignore[no-untyped-call]  # aioboto3 is untyped
        aws_access_key_id=_reveal(location.access_key_id),
        aws_secret_access_key=_reveal(location.secret_access_key),
        aws_session_token=_reveal(location.session_token),
        region_name=location.region,
    )


def client_config(location: S3Location, timeout: float, retries: int) -> Any:
    """`retries` counts retries, not attempts (botocore's max_attempts, standard mode)."""
    from aiobotocore.config import AioConfig

    style = location.addressing_style or ("path" if location.endpoint_url else "auto")
    return AioConfig(  # type: ignore[no-untyped-call]  # aiobotocore is untyped
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": retries, "mode": "standard"},
        s3={"addressing_style": style},
    )


@asynccontextmanager
async def s3_client(
    location: S3Location, request_timeout: float, *, retries: int = 2
) -> AsyncIterator[Any]:
    """A client for one run; `request_timeout` bounds connecting and each read."""
    session = new_session(location)
    config = client_config(location, request_timeout, retries)
    async with session.client("s3", endpoint_url=location.endpoint_url, config=config) as client:
        yield client


@functools.cache
def s3_errors() -> tuple[type[BaseException], ...]:
    """Every expected failure of an S3 call; anything else is a bug and should surface."""
    # botocore ships no type hints (mypy says so once per file: at the first import).
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    return (BotoCoreError, ClientError, TimeoutError, OSError)


def error_code(exc: BaseException) -> str | None:
    """S3's error code of a refused call (NoSuchKey, AccessDenied...); None for others."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or "unknown"
    return None


def describe_s3_failure(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed S3 call; never the error message, which may echo keys."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    code = error_code(exc)
    if code is not None:
        if code in _DENIED:
            return "access denied"
        if code in _REJECTED:
            return f"credentials rejected ({code})"
        return f"S3 error {code}"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return "no AWS credentials found (set access_key_id or the default chain)"
    if isinstance(exc, TimeoutError):
        return f"S3 request timed out after {timeout:g}s"
    inner = getattr(exc, "kwargs", {}).get("error")  # botocore wraps the aiohttp error
    if isinstance(inner, BaseException):
        return f"cannot reach the S3 endpoint: {describe_failure(inner, timeout)}"
    return f"S3 client failed: {type(exc).__name__}"


def is_no_bucket(exc: BaseException) -> bool:
    return error_code(exc) in _NO_BUCKET


def is_lasting(exc: BaseException) -> bool:
    """A refusal that trying again will not change (denied, rejected, no such bucket);
    anything else (unreachable, throttled, a server error) may pass."""
    code = error_code(exc)
    return code is not None and code in _DENIED | _REJECTED | _NO_BUCKET


# --- listing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    modified: float  # LastModified, epoch seconds (one-second resolution on most stores)
    size: int | None  # None: the store did not say (never read as 0 bytes)

    @property
    def order(self) -> tuple[float, str]:
        # On a LastModified tie the later name (a timestamp) counts as the newer.
        return (self.modified, self.key)


class UnreadableListing(Exception):
    """The listing lacks what a decision needs; the message says what."""


@dataclass(slots=True)
class Listing:
    objects: list[StoredObject]
    truncated: bool  # listing stopped at max_keys: what was not seen may matter


async def list_prefix(client: Any, bucket: str, prefix: str, max_keys: int) -> Listing:
    """Every object under `prefix` (ListObjectsV2, page by page), at most `max_keys`; "directory"
    placeholders (keys ending in /) left out."""
    objects: list[StoredObject] = []
    listed = 0
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": min(1000, max_keys)}
    while True:
        page = await client.list_objects_v2(**params)
        for obj in page.get("Contents", ()):
            listed += 1
            key = str(obj["Key"])
            if key.endswith("/"):
                continue
            modified: datetime | None = obj.get("LastModified")
            if modified is None:
                raise UnreadableListing(f"the store did not report when {key[:80]!r} was written")
            size = obj.get("Size")
            objects.append(
                StoredObject(key, modified.timestamp(), None if size is None else int(size))
            )
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return Listing(objects, truncated=False)
        if listed >= max_keys:
            return Listing(objects, truncated=True)
        params["ContinuationToken"] = token
