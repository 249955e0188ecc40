"""The `s3_backup` check's registration and config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pydantic
import pytest

from checks.base import CHECKS
from checks.s3_backup import VALUE_NAMES, S3BackupCheck, S3BackupCheckConfig

KEY_ID = "AKIDRUNBOOKDTEST0001"
SECRET = "s3cr3t-never-in-a-reason"
HOUR = 3600.0


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
