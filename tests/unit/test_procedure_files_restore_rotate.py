"""config/procedures/restore-from-backup.yaml and rotate-secrets.yaml: each is valid under
`runbookd check-config` with its secrets read from $CREDENTIALS_DIRECTORY files (none written
in the file), and the restore's `backup` parameter takes exactly the keys pg_backup writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.config.check import check_config_main
from daemon.config.loader import load_config
from remediations.backups import backup_key
from tests.examples import CREDENTIAL
from tests.paths import ROOT
from tests.unit.test_examples import keyless_url, secrets

FILES = [
    ROOT / "config" / "procedures" / name
    for name in ("restore-from-backup.yaml", "rotate-secrets.yaml")
]


def write_credentials(path: Path, directory: Path, variant: str) -> Path:
    """Each credential file `path` names, with a value of its own (a DSN for `*_dsn`)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in CREDENTIAL.findall(path.read_text()):
        if name.endswith("_dsn"):
            value = f"postgresql://restore:{variant}-{name}@127.0.0.1:5432/postgres"
        else:
            value = f"{variant}-{name}-0123456789abcdef0123456789"
        (directory / name).write_text(value + "\n")
    return directory


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_check_config_passes_with_secrets_from_credential_files(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = []
    for variant in ("a", "b"):  # two sets of files: a secret written inline stays the same
        directory = write_credentials(path, tmp_path / variant, variant)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
        assert check_config_main(str(path)) == 0, capsys.readouterr().err
        assert capsys.readouterr().out.startswith(f"{path}: ok (")
        loaded.append(secrets(load_config(path)))
    first, second = loaded
    assert first, "a procedure without a single secret?"
    inline = [p for p in first if first[p] == second[p] and not keyless_url(first[p])]
    assert inline == [], f"secrets written in {path.name}: {inline}"


def test_the_restore_takes_latest_or_a_key_pg_backup_writes_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = FILES[0]
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(write_credentials(path, tmp_path, "a")))
    config = load_config(path)
    param = config.procedures["restore_from_backup"].params["backup"]
    prefix = config.remediations["restore_database"].prefix
    assert param.default == "latest"
    assert param.pattern is not None
    good = ["latest", backup_key(prefix, 1_790_000_000, "plain"), backup_key(prefix, 0, "custom")]
    bad = ["postgres/backup-2026.sql.gz", "other/backup-20260101-020000.sql.gz", "x; DROP", ""]
    assert [bool(re.fullmatch(param.pattern, v)) for v in good] == [True] * 3
    assert [bool(re.fullmatch(param.pattern, v)) for v in bad] == [False] * 4
