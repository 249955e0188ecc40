"""Secrets the leak tests configure, and the search for any run of WINDOW of their characters in
what runbookd wrote (tests/*/test_secrets.py)."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field

from daemon.config.settings import DaemonSettings

# Any run of this many characters of a secret found in the output counts as a leak: a
# truncated or partly masked secret is still a leak.
WINDOW = 8


ALPHABET = string.ascii_letters + string.digits


# Only while the API token work is in the tree: then the API tokens are secrets too.
API_TOKENS = "api" in DaemonSettings.model_fields


def random_text(length: int) -> str:
    # Random letters and digits: distinctive, and the same in JSON, URLs and logs.
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class Secrets:
    pagerduty_routing_key: str = field(default_factory=lambda: random_text(32))
    slack_webhook_token: str = field(default_factory=lambda: random_text(24))
    http_bearer_token: str = field(default_factory=lambda: random_text(40))
    postgres_password: str = field(default_factory=lambda: random_text(24))
    s3_access_key_id: str = field(default_factory=lambda: "AKIA" + random_text(16).upper())
    s3_secret_access_key: str = field(default_factory=lambda: random_text(40))
    redis_password: str = field(default_factory=lambda: random_text(24))
    cdn_api_key: str = field(default_factory=lambda: random_text(36))
    api_write_token: str = field(default_factory=lambda: random_text(32))
    api_read_token: str = field(default_factory=lambda: random_text(32))

    def slack_path(self) -> str:
        # The whole path is the credential; its last part is the secret proper.
        return f"/services/T0RUNBOOKD/B0RUNBOOKD/{self.slack_webhook_token}"

    def named(self) -> dict[str, str]:
        values = {name: str(value) for name, value in vars(self).items()}
        if not API_TOKENS:
            del values["api_write_token"], values["api_read_token"]
        return values


@dataclass(frozen=True)
class Leak:
    secret: str
    where: str
    context: str

    def __str__(self) -> str:
        return f"{self.secret} in {self.where}: ...{self.context}..."


def find_leaks(secret_values: dict[str, str], outputs: dict[str, bytes]) -> list[Leak]:
    """Every place a secret, or WINDOW characters of one, appears in the outputs."""
    leaks: list[Leak] = []
    for name, value in secret_values.items():
        pieces = {value[i : i + WINDOW].encode() for i in range(len(value) - WINDOW + 1)}
        for where, data in outputs.items():
            hits = sorted(i for piece in pieces if (i := data.find(piece)) >= 0)
            if hits:
                start = max(0, hits[0] - 60)
                context = data[start : hits[0] + 60].decode("utf-8", "replace")
                leaks.append(Leak(name, where, context.replace("\n", "\\n")))
    return leaks
