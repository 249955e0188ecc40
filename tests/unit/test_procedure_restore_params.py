"""config/procedures/restore-from-backup.yaml: its `backup` parameter takes `latest` or exactly
the keys pg_backup writes under the restore's prefix, nothing else. (Every file in the folder
passes check-config with its secrets from credential files: tests/unit/test_examples.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.config.loader import load_config
from remediations.backups import backup_key
from remediations.pg_restore import PgRestoreConfig
from tests.examples import PROCEDURES_FOLDER, write_credentials


def test_the_restore_takes_latest_or_a_key_pg_backup_writes_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(write_credentials(tmp_path)))
    config = load_config(PROCEDURES_FOLDER / "restore-from-backup.yaml")
    param = config.procedures["restore_from_backup"].params["backup"]
    restore = config.remediations["restore_database"]
    assert isinstance(restore, PgRestoreConfig)
    assert param.default == restore.backup == "latest"
    assert param.pattern is not None
    prefix = restore.prefix
    good = ["latest", backup_key(prefix, 1_790_000_000, "plain"), backup_key(prefix, 0, "custom")]
    bad = ["postgres/backup-2026.sql.gz", "other/backup-20260101-020000.sql.gz", "x; DROP", ""]
    assert [bool(re.fullmatch(param.pattern, v)) for v in good] == [True] * 3
    assert [bool(re.fullmatch(param.pattern, v)) for v in bad] == [False] * 4
