"""config/examples/ and config/procedures/: each file is valid under `runbookd check-config` and
keeps every secret out of its text; the Alertmanager receiver example's rule is runbookd's
real schema; the runbook's procedures are shipped, each in its folder's README."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import BaseModel, SecretStr

from daemon.config.check import check_config_main
from daemon.config.loader import load_config, load_config_text
from daemon.rules.config import AlertMatch
from tests.examples import (
    CONFIGS,
    EXAMPLES,
    FOLDER,
    PROCEDURES,
    PROCEDURES_FOLDER,
    RECEIVER,
    write_credentials,
)

PLATFORMS = {"vercel", "docker-compose", "host-systemd", "host-pm2", "alertmanager"}
# The runbook's procedures shipped so far: file -> the procedure it defines.
SHIPPED_PROCEDURES = {
    "migration-deploy": "migration_deploy",
    "app-rollback": "app_rollback",
    "app-rollback-compose": "app_rollback",
    "restore-from-backup": "restore_from_backup",
    "rotate-secrets": "rotate_secrets",
}


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = write_credentials(tmp_path / "credentials")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    return directory


def test_the_folder_has_an_example_per_platform_each_in_its_readme() -> None:
    assert {p.stem for p in EXAMPLES} >= PLATFORMS
    readme = (FOLDER / "README.md").read_text()
    for example in EXAMPLES:
        assert f"({example.name})" in readme, f"README.md does not link {example.name}"


@pytest.mark.usefixtures("credentials")
def test_the_procedures_folder_ships_the_runbooks_procedures_each_in_its_readme() -> None:
    assert {p.stem for p in PROCEDURES} >= SHIPPED_PROCEDURES.keys()
    readme = (PROCEDURES_FOLDER / "README.md").read_text()
    for path in PROCEDURES:
        assert f"({path.name})" in readme, f"README.md does not link {path.name}"
        config = load_config(path)
        if path.stem in SHIPPED_PROCEDURES:
            assert SHIPPED_PROCEDURES[path.stem] in config.procedures
        assert config.procedures, f"{path.name} defines no procedure"


@pytest.mark.parametrize("example", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
@pytest.mark.usefixtures("credentials")
def test_check_config_passes(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main(str(example)) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"{example}: ok (")


def secrets(node: object, path: str = "") -> dict[str, str]:
    """Every secret in a loaded config, by its path."""
    found: dict[str, str] = {}
    if isinstance(node, SecretStr):
        found[path] = node.get_secret_value()
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            found |= secrets(getattr(node, name), f"{path}.{name}")
    elif isinstance(node, dict):
        for key, value in node.items():
            found |= secrets(value, f"{path}.{key}")
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            found |= secrets(value, f"{path}[{i}]")
    return found


def keyless_url(value: str) -> bool:
    """A database URL without a password (given by its own `password_file`): no secret."""
    parts = urlsplit(value)
    return parts.scheme in ("postgresql", "redis", "rediss") and parts.password is None


@pytest.mark.parametrize("example", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_secret_comes_from_a_credential_file(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[dict[str, str]] = []
    for variant in ("a", "b"):  # two sets of files: a secret written inline stays the same
        directory = write_credentials(tmp_path / variant, variant)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
        loaded.append(secrets(load_config(example)))
    first, second = loaded
    assert first, "an example without a single secret?"
    assert first.keys() == second.keys()
    inline = [
        path for path in first if first[path] == second[path] and not keyless_url(first[path])
    ]
    assert inline == [], f"secrets written in {example.name}: {inline}"


def receiver_snippet() -> str:
    """The runbookd rule the receiver example shows in its opening comment, uncommented."""
    lines = RECEIVER.read_text().splitlines()
    start = lines.index("#   rules:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        block.append(line.removeprefix("#   "))
    return "\n".join(block)


@pytest.mark.usefixtures("credentials")
def test_the_receiver_examples_rule_is_valid_with_the_runbookd_side() -> None:
    found = re.fullmatch(r"rules:\n  (\w+):\n(.*)", receiver_snippet(), re.S)
    assert found is not None, receiver_snippet()
    name, rule = found.groups()
    side = (FOLDER / "alertmanager.yaml").read_text()
    # The snippet's rule, under a name of its own, among the runbookd side's rules.
    text = side.replace("\nrules:\n", f"\nrules:\n  from_receiver:\n{rule}\n", 1)
    config = load_config_text(text, "receiver+alertmanager.yaml")
    match = AlertMatch(alert="HighErrorRate", labels={"service": "web"})
    assert config.rules["from_receiver"].alert_match == match
    assert config.rules[name].alert_match == match  # the runbookd side has the same rule
    # The receiver sends runbookd's own alerts (Runbookd...) to people, not to runbookd.
    assert not re.fullmatch("Runbookd.+", match.alert)
