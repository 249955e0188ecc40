"""Load and validate the YAML config; every problem names its file, line and YAML path.

Pipeline: read -> compose the YAML node tree (each node keeps its line) -> build plain data,
refusing duplicate keys and interpolating `${ENV}` -> validate with a pydantic model whose
`checks` and `remediations` are discriminated unions of the types the config names (of every
registered type when it is invalid, so messages list them all) -> check the cross references
(rule -> check, value, remediations). All problems are reported at once.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import re
import sys
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from checks.base import CHECKS, CheckConfig
from daemon.config import yaml_loader
from daemon.core import plugins
from daemon.core.files import FileRefused, read_regular_file, too_large
from daemon.core.redaction import redact_credentials
from daemon.core.units import (
    DAY,
    Duration,
    PositiveDuration,
    SecretFileError,
    SecretsModel,
    StrictModel,
    UnboundedDuration,
    format_duration,
    is_duration_parser,
    parse_duration,
)
from daemon.rules.config import RuleConfig
from remediations.base import REMEDIATIONS, RemediationConfig

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=64)]

YamlPath = tuple[str | int, ...]

# ---------------------------------------------------------------------------------------------
# The models


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


def _long_enough(value: SecretStr | None) -> SecretStr | None:
    # Short secrets can be guessed; the message never repeats the value.
    if value is not None and len(value.get_secret_value()) < MIN_SECRET:
        raise ValueError(f"too short: use at least {MIN_SECRET} characters")
    return value


Scope = Literal["read", "write", "intake"]


class ApiToken(SecretsModel):
    """One caller of the API. `write` may also read and push alerts; `intake` only pushes."""

    name: Name
    token: SecretStr
    scope: Scope

    _token_length = field_validator("token")(_long_enough)


class RateLimitConfig(StrictModel):
    """A token bucket per caller: `burst` requests at once, refilled at `per_second`."""

    per_second: float = Field(default=50.0, gt=0)
    burst: int = Field(default=200, ge=1)


class GrafanaSigning(SecretsModel):
    """Grafana's webhook contact point signs its requests to `POST /api/v1/alerts`: the
    hex HMAC-SHA256, with this secret, of `TIMESTAMP:BODY` in `header`, the unix seconds in
    `timestamp_header` (Grafana's "HMAC Signature" settings: secret, header, timestamp header).
    Its notifications (version "1") must then be signed; each is accepted once."""

    hmac_secret: SecretStr
    header: str = Field(default="X-Grafana-Alerting-Signature", pattern=r"^[A-Za-z0-9-]{1,64}$")
    # Required: without a timestamp a signed request could be replayed at any time.
    timestamp_header: str = Field(
        default="X-Grafana-Alerting-Signature-Timestamp", pattern=r"^[A-Za-z0-9-]{1,64}$"
    )
    tolerance: PositiveDuration = Field(default=300.0, le=3600)

    _secret_length = field_validator("hmac_secret")(_long_enough)


class ApiSettings(StrictModel):
    # No tokens: the API is open, which the loader allows only on a loopback `listen`.
    tokens: list[ApiToken] = Field(default_factory=list, max_length=100)
    protect_metrics: bool = False
    max_body: ByteSize = Field(default=ByteSize(1024 * 1024), ge=1024, le=64 * 1024 * 1024)
    rate_limit: RateLimitConfig = RateLimitConfig()
    # Connection limits (daemon/servers.py): a request's line and headers must arrive within
    # header_timeout of its first byte, its body within body_timeout (else 408); a connection
    # that sends nothing for idle_timeout is closed; beyond max_connections (and half the open
    # file limit) the oldest idle connection is closed to make room.
    header_timeout: PositiveDuration = Field(default=10.0, le=300)
    body_timeout: PositiveDuration = Field(default=30.0, le=600)
    idle_timeout: PositiveDuration = Field(default=120.0, le=3600)
    max_connections: int = Field(default=512, ge=16, le=100_000)
    grafana: GrafanaSigning | None = None

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
    max_actions: int = Field(default=5, ge=1)
    window: PositiveDuration = 3600.0


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
    max_firing_per_rule: int = Field(default=5_000, ge=1, le=1_000_000)
    max_firing: int = Field(default=25_000, ge=1, le=1_000_000)
    # A group whose notifications left alerts out (`truncatedAlerts`) holds its incident open
    # until a notification of it leaves none out, or none comes for this long: a sender
    # repeats a group while any of its alerts fires (Alertmanager's and Grafana's
    # repeat_interval, 4h by default), and sends nothing more once all resolved. Set it above
    # the sender's repeat_interval.
    truncated_hold: PositiveDuration = Field(default=5 * 3600.0, ge=60, le=7 * 86400)


class DaemonSettings(StrictModel):
    listen: str = "127.0.0.1:9464"
    state_dir: str = "./state"
    # Global dry-run: the timeline says what would have run, nothing runs.
    dry_run: bool = False
    budget: BudgetConfig = BudgetConfig()
    # After this many plans of one rule in a row that acted and did not help, that rule's
    # automation stops (it only pages) until an operator resets it.
    circuit_breaker_after: int = Field(default=3, ge=1)
    # Each run in flight may hold a socket or a process; beyond 10,000 it is a typo.
    max_checks_in_flight: int = Field(default=256, ge=1, le=10_000)
    # On SIGTERM, running remediations get this long to finish before they are cancelled.
    drain_grace: Duration = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Resolved incidents and ledger entries older than this are deleted (daily).
    history_retention: Retention = 30 * DAY
    api: ApiSettings = ApiSettings()
    alerts: AlertLimits = AlertLimits()

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


WEBHOOK_FIELDS = frozenset({"name", "status", "fingerprint", "summary"})
_LABEL_FIELD = re.compile(r"^labels\.[A-Za-z_][A-Za-z0-9_]*$")
_DOTTED = re.compile(r"^[^.\s]+(?:\.[^.\s]+)*$")


def _dotted_path(value: str) -> str:
    if len(value) > 256 or not _DOTTED.match(value):
        raise ValueError(f"not a dotted path into the body: {value!r} (e.g. alert.title)")
    return value


DottedPath = Annotated[str, AfterValidator(_dotted_path)]


class WebhookAuth(SecretsModel):
    """How a sender proves itself: an HMAC-SHA256 signature (preferred) or a bearer token."""

    hmac_secret: SecretStr | None = None
    token: SecretStr | None = None
    # A signed request is accepted this long either side of our clock (replay protection).
    tolerance: PositiveDuration = Field(default=300.0, le=3600)

    _secret_length = field_validator("hmac_secret", "token")(_long_enough)

    @model_validator(mode="after")
    def _one_method(self) -> WebhookAuth:
        if (self.hmac_secret is None) == (self.token is None):
            raise ValueError("give hmac_secret (or hmac_secret_file) or token, exactly one")
        return self


class WebhookConfig(StrictModel):
    """`POST /api/v1/webhooks/NAME`: a JSON body mapped to an alert by dotted paths."""

    fields: dict[str, DottedPath] = Field(max_length=64)
    auth: WebhookAuth
    # The path of a list of alerts in the body; `fields` are then relative to each item.
    each: DottedPath | None = None

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key == "labels.alertname":
                raise ValueError("labels.alertname: the alert name comes from `name`")
            if key not in WEBHOOK_FIELDS and not _LABEL_FIELD.match(key):
                known = "name, status, fingerprint, summary or labels.<label>"
                raise ValueError(f"unknown field {key!r} (known: {known})")
        missing = [key for key in ("name", "status") if key not in value]
        if missing:
            raise ValueError(f"needs {' and '.join(missing)}")
        return value


class RunbookConfig(StrictModel):
    """The static type of a loaded config. `config_model()` gives the class that validates."""

    # Never validates itself: its validator would only cost time and memory at import.
    # The classes `_build_model` derives from it build theirs on first use.
    model_config = ConfigDict(defer_build=True)

    runbookd: DaemonSettings = DaemonSettings()
    checks: dict[Name, CheckConfig] = Field(default_factory=dict)
    remediations: dict[Name, RemediationConfig] = Field(default_factory=dict)
    rules: dict[Name, RuleConfig] = Field(default_factory=dict)
    webhooks: dict[Name, WebhookConfig] = Field(default_factory=dict)

    @field_validator("runbookd", "checks", "remediations", "rules", "webhooks", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        # `checks:` with every entry commented out is an empty section, not an error.
        return {} if value is None else value


def _tagged_union(models: tuple[type[BaseModel], ...], kind: str) -> Any:
    if not models:

        def refuse(value: Any) -> Any:
            raise ValueError(f"no {kind} types are registered")

        return Annotated[Any, BeforeValidator(refuse)]
    # Union[tuple] unpacks a runtime tuple; the `X | Y` form ruff suggests cannot.
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


@functools.cache
def _build_model(
    check_models: tuple[type[BaseModel], ...], remediation_models: tuple[type[BaseModel], ...]
) -> type[RunbookConfig]:
    # Built at runtime, so typed Any: static code sees RunbookConfig.
    checks: Any = dict[Name, _tagged_union(check_models, "check")]  # type: ignore[misc]
    remediations: Any = dict[Name, _tagged_union(remediation_models, "remediation")]  # type: ignore[misc]
    return create_model(
        "RunbookConfig",
        __base__=RunbookConfig,
        __module__=__name__,
        checks=(checks, Field(default_factory=dict)),
        remediations=(remediations, Field(default_factory=dict)),
    )


def config_model() -> type[RunbookConfig]:
    """The validating model for every type, built-in or plugin (cached per set of types)."""
    plugins.load()
    return _registered_model()


def _registered_model() -> type[RunbookConfig]:
    return _build_model(tuple(CHECKS.config_models()), tuple(REMEDIATIONS.config_models()))


def _types(data: dict[str, Any], section: str) -> list[object]:
    """The `type:` of each entry of a section, as written (None where there is none)."""
    entries = data.get(section)
    if not isinstance(entries, dict):
        return []
    return [entry.get("type") if isinstance(entry, dict) else None for entry in entries.values()]


# ---------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.path}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def _dotted(path: YamlPath) -> str:
    return ".".join(map(str, path)) if path else "(top level)"


def _describe(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "an empty value"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


# ---------------------------------------------------------------------------------------------
# YAML -> plain data, with the line of every path

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_ENV = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\{))"
)
# Larger is not a config: refused before parsing (a 50 MB file would take a minute and GBs).
MAX_CONFIG_BYTES = 4 * 1024 * 1024

# libyaml's parser where PyYAML was built with it (daemon/yaml_loader.py).
_LOADER: yaml_loader.Loader = yaml_loader.DEFAULT_LOADER


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Reader:
    """Builds plain data from the composed node tree, remembering each path's line."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []
        self.lines: dict[YamlPath, int] = {}
        # Paths whose value is already reported (unset variable, bad tag): pydantic would
        # only repeat it, less clearly.
        self.reported: set[YamlPath] = set()
        self._constructor = yaml_loader.CoreConstructor()
        self._active: set[int] = set()

    def problem(self, line: int, path: YamlPath, message: str) -> None:
        self.problems.append(Problem(self.filename, line, _dotted(path), message))

    def value_problem(self, node: Node, path: YamlPath, message: str) -> None:
        self.problem(_line(node), path, message)
        self.reported.add(path)

    def read(self, text: str) -> dict[str, Any] | None:
        """The data, or None when there is nothing to validate (problems say why)."""
        try:
            root = yaml_loader.compose(text, _LOADER)
            if root is None:
                return {}
            self.lines[()] = _line(root)
            if not isinstance(root, MappingNode):
                kind = "a list" if isinstance(root, SequenceNode) else "a single value"
                self.problem(_line(root), (), f"must be a mapping of sections, not {kind}")
                return None
            return self._mapping(root, ())
        except yaml.YAMLError as exc:
            self.problems.append(_yaml_problem(self.filename, text, exc))
        except RecursionError:  # composing bounds the depth: not expected
            self.problem(1, ("yaml",), "too deeply nested")
        return None

    def _build(self, node: Node, path: YamlPath) -> Any:
        # Composing bounded the nodes, aliases and merges included, that this may visit.
        if id(node) in self._active:
            self.value_problem(node, path, "an alias refers to itself")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                self._check_tag(node, _SEQ_TAG, path)
                items = enumerate(node.value)
                return [self._build(item, self._at(item, (*path, i))) for i, item in items]
            return self._scalar(cast(ScalarNode, node), path)
        finally:
            self._active.discard(id(node))

    def _at(self, node: Node, path: YamlPath) -> YamlPath:
        self.lines[path] = _line(node)
        return path

    def _check_tag(self, node: Node, expected: str, path: YamlPath) -> None:
        if node.tag != expected:
            self.value_problem(node, path, f"unsupported YAML tag {node.tag!r}")

    def _mapping(self, node: MappingNode, path: YamlPath) -> dict[str, Any]:
        self._check_tag(node, _MAP_TAG, path)
        result: dict[str, Any] = {}
        for key_node, value_node, merged in self._pairs(node, path, frozenset({id(node)})):
            key = self._key(key_node, path)
            if key is None:
                continue
            child = (*path, key)
            if key in result:
                if not merged:  # a merged key is overridden quietly: that is what << is for
                    first = f"first on line {self.lines[child]}"
                    self.problem(_line(key_node), child, f"duplicate key {key!r} ({first})")
                continue
            result[key] = self._build(value_node, self._at(key_node, child))
        return result

    def _pairs(
        self, node: MappingNode, path: YamlPath, seen: frozenset[int]
    ) -> list[tuple[Node, Node, bool]]:
        """Own pairs first, then those merged in with `<<` (earlier sources win)."""
        own: list[tuple[Node, Node, bool]] = []
        merged: list[tuple[Node, Node, bool]] = []
        for key, value in node.value:
            if key.tag != _MERGE_TAG:
                own.append((key, value, False))
                continue
            sources = value.value if isinstance(value, SequenceNode) else [value]
            for source in sources:
                if not isinstance(source, MappingNode) or id(source) in seen:
                    self.problem(_line(key), path, "<< takes a mapping or a list of mappings")
                    continue
                pairs = self._pairs(source, path, seen | {id(source)})
                merged += [(k, v, True) for k, v, _ in pairs]
        return own + merged

    def _key(self, node: Node, path: YamlPath) -> str | None:
        if not isinstance(node, ScalarNode):
            self.problem(_line(node), path, "a key must be a plain value, not a list or mapping")
            return None
        # Keys are their text: every key here is a name, and `on:` or `1:` should not turn
        # into True or 1 (YAML 1.1 resolution) behind the user's back.
        return str(node.value)

    def _scalar(self, node: ScalarNode, path: YamlPath) -> Any:
        if node.tag == _STR_TAG:
            return self._interpolate(node, path)
        try:
            return self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self.value_problem(node, path, getattr(exc, "problem", None) or str(exc))
            return None

    def _interpolate(self, node: ScalarNode, path: YamlPath) -> str:
        """`${VAR}`, `${VAR:-default}` (also when VAR is empty, as in sh), `$$` -> `$`."""
        text: str = node.value

        def substitute(match: re.Match[str]) -> str:
            if match["dollar"]:
                return "$"
            if match["bad"]:
                self.value_problem(node, path, "bad ${...}: use ${VAR}, ${VAR:-default} or $$")
                return ""
            value = os.environ.get(match["name"])
            if match["default"] is not None and not value:
                return str(match["default"])
            if value is None:
                message = f"environment variable {match['name']} is not set"
                self.value_problem(node, path, message)
                return ""
            return value

        return _ENV.sub(substitute, text) if "$" in text else text


def _yaml_problem(filename: str, text: str, exc: yaml.YAMLError) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        message = exc.problem or exc.context or "not valid YAML"
        # A composer's context is the main statement ("expected a single document ...").
        if exc.context and exc.problem and not exc.context.startswith("while "):
            message = f"{exc.context}, {exc.problem}"
        return Problem(filename, line, "yaml", message)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        return Problem(filename, line, "yaml", f"character #x{exc.character:04x}: {exc.reason}")
    return Problem(filename, 1, "yaml", str(exc).splitlines()[0])


# ---------------------------------------------------------------------------------------------
# pydantic errors -> problems

_ABSENT = object()


def _yaml_path(loc: tuple[int | str, ...], data: Any) -> YamlPath:
    """pydantic's loc as the YAML path: without union tags and `[key]` markers."""
    path: list[str | int] = []
    node = data
    tag_skipped = False
    for seg in loc:
        if seg == "[key]":
            continue
        if isinstance(node, dict):
            # A discriminated union puts the member's tag (the `type` value) into the loc.
            if not tag_skipped and node.get("type") == seg:
                tag_skipped = True
                continue
            node, tag_skipped = node.get(seg, _ABSENT), False
        elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
            node = node[seg]
        elif node is not _ABSENT:
            break  # below a scalar only union member names follow
        path.append(seg)
    return tuple(path)


def _line_of(path: YamlPath, lines: Mapping[YamlPath, int]) -> int:
    """The line of `path`, or of its deepest ancestor present in the file (missing fields)."""
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path, 1)


def _unwrap(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, UnionType) and NoneType in get_args(tp):
            rest = [arg for arg in get_args(tp) if arg is not NoneType]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def _tags(tp: Any) -> list[str]:
    """The `type` values a union of config models (or one model) accepts."""
    members = get_args(tp) if get_origin(tp) in (Union, UnionType) else (tp,)
    tags: list[str] = []
    for member in members:
        if isinstance(member, type) and issubclass(member, BaseModel):
            field = member.model_fields.get("type")
            if field is not None and get_origin(field.annotation) is Literal:
                tags += [str(arg) for arg in get_args(field.annotation)]
    return sorted(tags)


def _type_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> Any:
    """The type pydantic validated at `loc`, or None: only to word messages."""
    tp: Any = model
    for seg in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if seg in _tags(tp):
                continue  # the tag of a one-member union
            tp = next((annotation for key, annotation in _fields(tp) if key == seg), None)
            if tp is None:
                return None
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, UnionType):
            tp = next((m for m in get_args(tp) if seg in _tags(m)), None)
        else:
            return None
    return _unwrap(tp)


def _fields(model: type[BaseModel]) -> Iterator[tuple[str, Any]]:
    """(YAML key, annotation) of each field, with the `*_file` form of secrets."""
    for name, field in model.model_fields.items():
        yield field.alias or name, field.annotation
        if issubclass(model, SecretsModel) and _unwrap(field.annotation) is SecretStr:
            yield f"{name}_file", str


def _unknown_field(key: str | int, model: Any) -> str:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return "unknown field"
    import difflib  # only to word an error

    known = sorted(name for name, _ in _fields(model))
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        return f"unknown field, did you mean {close[0]!r}?"
    return f"unknown field (known: {', '.join(known)})"


def _is_duration(model: type[BaseModel], loc: tuple[int | str, ...]) -> bool:
    """Whether the field at `loc` holds a duration (`daemon.core.units.Duration` and kin)."""
    owner = _type_at(model, loc[:-1]) if loc else None
    if not (isinstance(owner, type) and issubclass(owner, BaseModel)):
        return False
    for name, field in owner.model_fields.items():
        if (field.alias or name) == loc[-1]:
            return any(map(is_duration_parser, field.metadata)) or _parses_duration(
                field.annotation
            )
    return False


def _parses_duration(tp: Any) -> bool:
    if get_origin(tp) is Annotated:
        return any(map(is_duration_parser, tp.__metadata__)) or _parses_duration(get_args(tp)[0])
    if get_origin(tp) in (Union, UnionType):
        return any(map(_parses_duration, get_args(tp)))
    return False


_BOUNDS = {
    "greater_than": ("gt", "more than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _duration_bound(kind: str, value: Any, ctx: dict[str, Any]) -> str | None:
    """`must be at least 100ms, not 0s`: a duration's bounds in time units, not seconds;
    None if the error does not carry what that needs (pydantic's words then)."""
    key, words = _BOUNDS[kind]
    try:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
        bound = float(ctx[key])
    except (KeyError, TypeError, ValueError):
        return None
    return f"must be {words} {format_duration(bound)}, not {format_duration(seconds)}"


def _message(error: ErrorDetails, model: type[BaseModel]) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    if kind in _BOUNDS and _is_duration(model, loc):
        worded = _duration_bound(kind, error["input"], ctx)
        if worded is not None:
            return worded
    if "[key]" in loc:
        return (
            f"not a valid name: {error['input']!r} (letters, digits, _ and -, "
            "starting with a letter or _, at most 64 characters)"
        )
    if kind == "extra_forbidden":
        return _unknown_field(loc[-1], _type_at(model, loc[:-1]))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        what = {"checks": "check ", "remediations": "remediation "}.get(str(loc[0]), "")
        known = ", ".join(_tags(_type_at(model, loc))) or "none registered"
        if kind == "union_tag_not_found":
            return f"every {what}needs a type (known: {known})"
        return f"unknown {what}type {ctx.get('tag')!r} (known: {known})"
    if kind == "missing":
        return "field required"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, not {_describe(error['input'])}"
    if kind == "list_type":
        return f"expected a list, not {_describe(error['input'])}"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return message[:1].lower() + message[1:] if message[1:2].islower() else message


def _validation_problems(
    exc: ValidationError, model: type[BaseModel], data: Any, reader: _Reader
) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        path = _yaml_path(error["loc"], data)
        if path in reader.reported and error["type"] != "extra_forbidden":
            continue
        if error["type"] == "union_tag_invalid":
            path = (*path, "type")
        message = _message(error, model)
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, SecretFileError):  # at the `*_file` line, not its entry's
            path, message = (*path, cause.key), cause.detail
        line = _line_of(path, reader.lines)
        problems.append(Problem(reader.filename, line, _dotted(path), message))
    return problems


# ---------------------------------------------------------------------------------------------
# Cross references


def _listing(names: Collection[str]) -> str:
    return f"available: {', '.join(sorted(names))}" if names else "none defined"


def _notifies(config: RemediationConfig) -> bool:
    return bool(REMEDIATIONS.get(config.type).notifier)


def _reference_problems(config: RunbookConfig, reader: _Reader) -> list[Problem]:
    found: list[tuple[YamlPath, str]] = []
    for name, rule in config.rules.items():
        if rule.alert_match is not None:
            continue  # a rule on alerts names no check
        check_name, value = rule.condition.check, rule.condition.value
        check = config.checks.get(check_name)
        if check is None:
            defined = _listing(config.checks)
            found.append((("rules", name, "when"), f"no check named {check_name!r} ({defined})"))
        elif (values := check.value_names()) is not None and value not in values:
            message = f"check {check_name!r} has no value {value!r} ({_listing(values)})"
            found.append((("rules", name, "when"), message))
        for section in ("do", "escalate", "on_blind"):
            for index, action in enumerate(getattr(rule, section)):
                if action not in config.remediations:
                    defined = _listing(config.remediations)
                    message = f"no remediation named {action!r} ({defined})"
                    found.append((("rules", name, section, index), message))
                elif section == "on_blind" and not _notifies(config.remediations[action]):
                    message = f"{action!r} is not a notifier: being blind only ever pages"
                    found.append((("rules", name, section, index), message))
    return [
        Problem(reader.filename, _line_of(path, reader.lines), _dotted(path), message)
        for path, message in found
    ]


def _exposure_problems(config: RunbookConfig, reader: _Reader) -> list[Problem]:
    """An API reachable from the network must not be open: it can approve remediations."""
    settings = config.runbookd
    host = settings.listen_address[0]
    if settings.api.tokens or is_loopback(host):
        return []
    path: YamlPath = ("runbookd", "listen")
    message = (
        f"{host} is not a loopback address, so runbookd.api.tokens must list at least one "
        "token (or listen on 127.0.0.1)"
    )
    return [Problem(reader.filename, _line_of(path, reader.lines), _dotted(path), message)]


# ---------------------------------------------------------------------------------------------
# Entry points


def _validate(data: dict[str, Any], reader: _Reader) -> tuple[RunbookConfig | None, list[Problem]]:
    # Imports only the modules of the types the config names; a name that is not a built-in
    # type loads every type, so an unknown one is reported with all the known ones.
    plugins.load_types(_types(data, "checks"), _types(data, "remediations"))
    model = _registered_model()
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _validation_problems(exc, model, data, reader)


def load_config_text(text: str, filename: str = "<config>") -> RunbookConfig:
    """Validate config text; raises ConfigError with every problem, sorted by line.

    No credential is repeated in a problem: see `_redacted`."""
    if len(text) > MAX_CONFIG_BYTES:
        message = too_large(len(text), MAX_CONFIG_BYTES)
        raise ConfigError([Problem(filename, 0, "file", message)])
    reader = _Reader(filename)
    data = reader.read(text)
    problems = reader.problems
    config: RunbookConfig | None = None
    if data is not None:
        config, invalid = _validate(data, reader)
        problems += invalid
        if config is not None:
            problems += _reference_problems(config, reader) + _exposure_problems(config, reader)
    if problems or config is None:
        problems = _redacted(problems, data)
        raise ConfigError(sorted(problems, key=lambda problem: problem.line))
    return config


def _redacted(problems: list[Problem], data: dict[str, Any] | None) -> list[Problem]:
    """Problems without credentials: URL and DSN passwords, and every value given to a
    secret field (a message about another field may quote it)."""
    secrets: set[str] = set()
    if data is not None:
        _secret_values(_registered_model(), data, secrets)
    return [
        Problem(p.file, p.line, p.path, redact_credentials(p.message, secrets)) for p in problems
    ]


def _secret_values(tp: Any, value: Any, found: set[str]) -> None:
    """Collect the text given to `SecretStr` fields of `tp` in `value` (plain config data)."""
    tp = _unwrap(tp)
    if tp is SecretStr:
        if isinstance(value, str):
            found.add(value)
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        if isinstance(value, dict):
            fields = dict(_fields(tp))
            for key, item in value.items():
                if key in fields:
                    _secret_values(fields[key], item, found)
    elif get_origin(tp) is dict and isinstance(value, dict):
        for item in value.values():
            _secret_values(get_args(tp)[1], item, found)
    elif get_origin(tp) is list and isinstance(value, list):
        for item in value:
            _secret_values(get_args(tp)[0], item, found)
    elif get_origin(tp) in (Union, UnionType):
        tag = value.get("type") if isinstance(value, dict) else None
        members = [m for m in get_args(tp) if tag in _tags(m)] or get_args(tp)
        for member in members:
            _secret_values(member, value, found)


def load_config(path: str | Path) -> RunbookConfig:
    """Read and validate a config file. Blocking: from the event loop, use asyncio.to_thread.

    Only a regular file of at most MAX_CONFIG_BYTES is read (not /dev/zero, nor a FIFO)."""
    filename = str(path)
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES)
    except FileRefused as exc:
        raise ConfigError([Problem(filename, 0, "file", str(exc))]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = f"not UTF-8 (byte 0x{raw[exc.start]:02x})"
        raise ConfigError([Problem(filename, line, "file", message)]) from None
    return load_config_text(text, filename)


def config_hash(config: RunbookConfig) -> str:
    """sha256 of the validated config as canonical JSON.

    Comments, formatting and key order don't change it; `${ENV}` values do. Secrets enter
    only masked, so the hash may be shown (metrics, timeline) without leaking them.
    """
    data = config.model_dump(mode="json", by_alias=True, serialize_as_any=True)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_config_main(path: str) -> int:
    """`runbookd check-config FILE`: 0 and a summary line when valid, else 2 and the problems."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    counts = (
        f"{len(config.checks)} checks, {len(config.rules)} rules, "
        f"{len(config.remediations)} remediations"
    )
    print(f"{path}: ok ({counts})")
    return 0
