"""config/examples/ and config/procedures/: the example configs and the runbook's procedures
(complete configs too), and made-up credential files for the ones they read (they take every
secret from $CREDENTIALS_DIRECTORY, as systemd's LoadCredential= hands them to the daemon)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.paths import ROOT

FOLDER = ROOT / "config" / "examples"
EXAMPLES = sorted(FOLDER.glob("*.yaml"))
PROCEDURES_FOLDER = ROOT / "config" / "procedures"
PROCEDURES = sorted(PROCEDURES_FOLDER.glob("*.yaml"))
# Every complete config shipped for people to copy from: each must pass check-config.
CONFIGS = EXAMPLES + PROCEDURES
RECEIVER = ROOT / "config" / "alertmanager" / "receiver.example.yml"
CREDENTIAL = re.compile(r"\$\{CREDENTIALS_DIRECTORY\}/(runbookd_[A-Za-z0-9_]+)")


def credential_names() -> set[str]:
    return {name for path in CONFIGS for name in CREDENTIAL.findall(path.read_text())}


def write_credentials(directory: Path, variant: str = "a") -> Path:
    """Every credential file the examples and procedures read, each with a value of its own
    (`variant` makes another set) that passes as a token, a URL, a password and a secret; a
    DSN for `*_dsn`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in credential_names():
        if name.endswith("_dsn"):
            value = f"postgresql://maint:{variant}-{name}@127.0.0.1:5432/app"
        else:
            value = f"https://hooks.example.com/services/{variant}/{name}/0123456789abcdef"
        (directory / name).write_text(value + "\n")
    return directory
