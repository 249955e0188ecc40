"""The `runbookd:` section: listen address, budget, API callers and limits, retention.

Also the rules every section shares: entry names (`Name`) and the least length of a secret.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, ClassVar, Literal

from pydantic import ByteSize, Field, SecretStr, StringConstraints, field_validator, model_validator

from daemon.config.store import SqliteStoreSettings, StoreSettings
from daemon.core.units import (
    DAY,
    Duration,
    PositiveDuration,
    SecretsModel,
    StrictModel,
    UnboundedDuration,
)

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=64)]

_LISTEN = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]\s/]+)):(?P<port>\d{1,5})$", re.ASCII)


def parse_listen(text: str) -> tuple[str, int]:
    """Split host:port, e.g. "[::1]:9464" -> ("::1", 9464). IPv6 goes in brackets."""
    match = _LISTEN.match(text)
    if match is None or int(match["port"]) > 65535:
        hint = " (put an IPv6 address in brackets)" if text.count(":") > 1 else ""
        raise ValueError(f"not host:port: {text!r}, use e.g. 127.0.0.1:9464 or [::1]:9464{hint}")
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(match["v6"])
        except ValueError:
            raise ValueError(f"not an IPv6 address: {match['v6']!r}") from None
    return match["v6"] or match["host"], int(match["port"])


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (also IPv4-mapped): nothing off the machine."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name could resolve to anything
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


MIN_SECRET = 16


def long_enough(value: SecretStr | None) -> SecretStr | None:
    # Short secrets can be guessed; the message never repeats the value.
    if value is not None and len(value.get_secret_value()) < MIN_SECRET:
        raise ValueError(f"too short: use at least {MIN_SECRET} characters")
    return value


Scope = Literal["read", "write", "intake"]


class ApiToken(SecretsModel):
    """One caller of the API. `write` may also read and push alerts; `intake` only pushes."""

    name: Name = Field(description="The caller's name, for the logs and the audit trail.")
    token: SecretStr = Field(
        description="Sent as `Authorization: Bearer TOKEN`; at least 16 characters."
    )
    scope: Scope = Field(
        description="`read`: GET routes; `write`: every route; `intake`: only "
        "`POST /api/v1/alerts` (what Alertmanager is given)."
    )

    _token_length = field_validator("token")(long_enough)


class RateLimitConfig(StrictModel):
    """A token bucket per caller: `burst` requests at once, refilled at `per_second`."""

    per_second: float = Field(
        default=50.0, gt=0, description="Requests per second a caller may make, sustained."
    )
    burst: int = Field(
        default=200, ge=1, description="Requests a caller may make at once; beyond, 429."
    )


class GrafanaSigning(SecretsModel):
    """Grafana's webhook contact point signs its requests to `POST /api/v1/alerts`: the
    hex HMAC-SHA256, with this secret, of `TIMESTAMP:BODY` in `header`, the unix seconds in
    `timestamp_header` (Grafana's "HMAC Signature" settings: secret, header, timestamp header).
    Its notifications (version "1") must then be signed; each is accepted once."""

    hmac_secret: SecretStr = Field(
        description="The secret of Grafana's contact point; at least 16 characters."
    )
    header: str = Field(
        default="X-Grafana-Alerting-Signature",
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="The header holding the signature.",
    )
    # Required: without a timestamp a signed request could be replayed at any time.
    timestamp_header: str = Field(
        default="X-Grafana-Alerting-Signature-Timestamp",
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="The header holding the unix seconds signed with the body.",
    )
    tolerance: PositiveDuration = Field(
        default=300.0,
        le=3600,
        description="A request is accepted this long either side of runbookd's clock.",
    )

    _secret_length = field_validator("hmac_secret")(long_enough)


class ApiSettings(StrictModel):
    """The HTTP API (`/healthz`, `/metrics`, `/api/v1/...`): who may call it and its limits.
    Every error answer is JSON: `{"error": "reason"}`."""

    # No tokens: the API is open, which the loader allows only on a loopback `listen`.
    tokens: list[ApiToken] = Field(
        default_factory=list,
        max_length=100,
        description="The API's callers. None: the API is open, which only a loopback `listen` "
        "allows.",
    )
    protect_metrics: bool = Field(
        default=False, description="true: `/metrics` needs a `read` token too."
    )
    max_body: ByteSize = Field(
        default=ByteSize(1024 * 1024),
        ge=1024,
        le=64 * 1024 * 1024,
        description="The largest request body; larger is refused with 413.",
    )
    rate_limit: RateLimitConfig = Field(
        default=RateLimitConfig(), description="Requests per caller (token, or address)."
    )
    # Connection limits (daemon/api/servers.py).
    header_timeout: PositiveDuration = Field(
        default=10.0,
        le=300,
        description="A request's line and headers must arrive within this of its first byte, "
        "else 408.",
    )
    body_timeout: PositiveDuration = Field(
        default=30.0, le=600, description="A request's body must arrive within this, else 408."
    )
    idle_timeout: PositiveDuration = Field(
        default=120.0, le=3600, description="A keep-alive connection idle this long is closed."
    )
    max_connections: int = Field(
        default=512,
        ge=16,
        le=100_000,
        description="Connections open at once (never more than half the open-file limit); at "
        "the cap the oldest idle one is closed to make room.",
    )
    session_ttl: PositiveDuration = Field(
        default=12 * 3600.0,
        ge=60,
        le=7 * 86400,
        description="How long a console session (`/ui/`, a token exchanged for a cookie) lasts. "
        "Sessions are kept in memory: a restart logs everyone out.",
    )
    grafana: GrafanaSigning | None = Field(
        default=None,
        description="Grafana's signed webhooks to `POST /api/v1/alerts`; unset: unsigned "
        "Grafana notifications are accepted with a token.",
    )

    @model_validator(mode="after")
    def _distinct(self) -> ApiSettings:
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("tokens: two tokens have the same name")
        values = {t.token.get_secret_value() for t in self.tokens}
        if len(values) != len(self.tokens):
            raise ValueError("tokens: two tokens have the same value (which scope would it have?)")
        return self


class BudgetConfig(StrictModel):
    """At most `max_actions` remediations (notifiers exempt) per sliding `window`."""

    # At least one: a budget of none would hold back every action; use dry_run for that.
    max_actions: int = Field(
        default=5,
        ge=1,
        description="Remediations that may run in `window`, all rules together; beyond, a step "
        "is held back and the plan escalates.",
    )
    window: PositiveDuration = Field(default=3600.0, description="The sliding window counted.")


# Resolved incidents may be kept longer than other durations allow: audits ask for years.
MAX_RETENTION = 10 * 366 * DAY
Retention = Annotated[UnboundedDuration, Field(gt=0, le=MAX_RETENTION)]


class AlertLimits(StrictModel):
    """Caps on the pushed alerts firing at once: a new firing alert beyond one is refused
    (429, which Alertmanager retries) and its rule's `RULE:alert_cap` incident pages. An alert
    counts once for every rule it matches; resolutions are never refused.

    Each firing alert costs some 150 bytes of memory and a store row of some 600 bytes (with
    Alertmanager's usual labels and annotations), and at start some 40 us and a transient 3 KB
    to restore: at the default total, about 4 MB, 15 MB of store, and 1 s and a passing 80 MB
    at start."""

    # Far above one rule's alerts in a real fleet, yet five noisy rules leave room for others.
    max_firing_per_rule: int = Field(
        default=5_000,
        ge=1,
        le=1_000_000,
        description="Pushed alerts firing at once for one rule; a new one beyond is refused "
        "with 429.",
    )
    max_firing: int = Field(
        default=25_000,
        ge=1,
        le=1_000_000,
        description="Pushed alerts firing at once, all rules together.",
    )
    # A sender repeats a group while any of its alerts fires (Alertmanager's and Grafana's
    # repeat_interval, 4h by default), and sends nothing more once all resolved.
    truncated_hold: PositiveDuration = Field(
        default=5 * 3600.0,
        ge=60,
        le=7 * 86400,
        description="A group whose notification left alerts out (`truncatedAlerts`) holds its "
        "incident open until one leaves none out, or none comes for this long. Set it above "
        "the sender's `repeat_interval`.",
    )


class DaemonSettings(StrictModel):
    """The daemon itself: where it listens and keeps its state, and the bounds on all
    automation."""

    example: ClassVar[str] = """
        runbookd:
          listen: 127.0.0.1:9464
          state_dir: /var/lib/runbookd
          dry_run: false                        # true: record what would run, run nothing
          budget: {max_actions: 5, window: 1h}  # all rules together
          api:
            tokens:
              - {name: alertmanager, token: "${RUNBOOKD_INTAKE_TOKEN}", scope: intake}
              - {name: oncall, token: "${RUNBOOKD_WRITE_TOKEN}", scope: write}
        """

    listen: str = Field(
        default="127.0.0.1:9464",
        description="host:port of the HTTP API (an IPv6 address in brackets: `[::1]:9464`). "
        "Off loopback, `api.tokens` is required.",
    )
    state_dir: str = Field(
        default="./state",
        description="The directory of the SQLite store (incidents, timelines, cooldowns, "
        "budget, outbox); one daemon per directory.",
    )
    store: StoreSettings = Field(
        default_factory=SqliteStoreSettings,
        description=(
            "Where incidents, timelines, the action ledger and the outbox live: "
            "{type: sqlite} (the default: a file in state_dir, one daemon per directory) or "
            "{type: postgres, dsn: ...}, in a database of its own, not the "
            "application's, so runbookd is not blind when the application's database is down."
        ),
    )
    dry_run: bool = Field(
        default=False,
        description="true: every rule only records what it would have run; nothing runs.",
    )
    budget: BudgetConfig = Field(
        default=BudgetConfig(), description="The global bound on remediations per window."
    )
    circuit_breaker_after: int = Field(
        default=3,
        ge=1,
        description="After this many plans of one rule in a row that acted and did not help, "
        "the rule's automation stops (it only pages) until `POST /api/v1/rules/RULE/reset`.",
    )
    # Each run in flight may hold a socket or a process; beyond 10,000 it is a typo.
    max_checks_in_flight: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="Check runs at once; a check due while all are busy waits its turn.",
    )
    check_processes: Annotated[int, Field(ge=0, le=64)] | Literal["auto"] = Field(
        default="auto",
        description="Processes that run the plain `http` checks (GET or HEAD that the lean "
        "client serves) beside the daemon's: 0 runs every check in the daemon's process; n "
        "spreads those checks over n worker processes by their names (a reload keeps a check "
        "in its worker), every other check staying in the daemon. `auto`: 0 below 10,000 such "
        "checks, else one per CPU but one (at least 1). Measured (bench/README.md): at 5,000 "
        "checks/s one process keeps up and a worker saves no CPU (55-66 us per check either "
        "way) but adds ~75 MB; at 20,000/s one process cannot (13,000 runs/s done). Decided "
        "at start; a reload keeps the processes. Each process has `max_checks_in_flight`.",
    )
    drain_grace: Duration = Field(
        default=30.0,
        description="On SIGTERM (or a core task's death), running remediations get this long "
        "to finish before they are cancelled.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="The least level logged."
    )
    history_retention: Retention = Field(
        default=30 * DAY,
        description="Resolved incidents and ledger entries older than this are deleted (daily).",
    )
    api: ApiSettings = Field(default=ApiSettings(), description="The HTTP API.")
    alerts: AlertLimits = Field(
        default=AlertLimits(), description="Caps on the pushed alerts firing at once."
    )

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_listen(self.listen)
