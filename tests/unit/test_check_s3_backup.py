"""The `s3_backup` check's registration and config."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pydantic
import pytest
from botocore.config import Config

from checks.base import CHECKS
from checks.s3_backup import VALUE_NAMES, S3BackupCheck, S3BackupCheckConfig
from tests.moto_server import moto_server

KEY_ID = "AKIDRUNBOOKDTEST0001"
SECRET = "s3cr3t-never-in-a-reason"
HOUR = 3600.0


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


def _client(endpoint: str, key_id: str = KEY_ID, secret: str = SECRET, service: str = "s3") -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def s3(endpoint: str) -> Any:
    return _client(endpoint)


def _new_bucket(s3: Any) -> str:
    name = f"backups-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def bucket(s3: Any) -> str:
    return _new_bucket(s3)


# --- config --------------------------------------------------------------------------------


def test_registered_with_defaults() -> None:
    assert CHECKS.get("s3_backup") is S3BackupCheck
    config = S3BackupCheckConfig.model_validate({"type": "s3_backup", "bucket": "b"})
    assert (config.rpo, config.size_drop, config.min_size) == (86400.0, 0.5, 1)
    assert config.require_encryption
    assert config.prefix == ""
    assert (config.page_size, config.max_keys, config.region) == (1000, 10_000, "us-east-1")
    assert config.value_names() == VALUE_NAMES
    relaxed = config.model_copy(update={"require_encryption": False})
    assert "encrypted" not in relaxed.value_names()


def test_config_units_and_secret_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    config = S3BackupCheckConfig.model_validate(
        {
            "type": "s3_backup",
            "bucket": "b",
            "rpo": "26h",
            "size_drop": "20%",
            "access_key_id": KEY_ID,
            "secret_access_key_file": str(tmp_path / "secret"),
        }
    )
    assert (config.rpo, config.size_drop) == (26 * HOUR, 0.2)
    assert config.secret_access_key is not None
    assert config.secret_access_key.get_secret_value() == SECRET
    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"access_key_id": KEY_ID}, "give both access_key_id and secret_access_key"),
        ({"secret_access_key": SECRET}, "give both access_key_id and secret_access_key"),
        ({"session_token": "t"}, "session_token needs access_key_id"),
        ({"endpoint_url": "ftp://127.0.0.1"}, "not an http(s) URL"),
        ({"rpo": "24"}, "not a duration"),
        ({"size_drop": "150%"}, "not a ratio"),
        ({"page_size": 5000}, "less than or equal to 1000"),
        ({"bucket": "a/b"}, "should match pattern"),
        ({"addressing_style": "dns"}, "'auto', 'path' or 'virtual'"),
    ],
)
def test_config_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=re.escape(message)):
        S3BackupCheckConfig.model_validate({"type": "s3_backup", "bucket": "b", **fields})
