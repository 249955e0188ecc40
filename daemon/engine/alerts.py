"""Alerts pushed by other systems: the Alertmanager webhook (version 4) and Grafana's (version 1).

Grafana's webhook contact point sends Alertmanager's body with `"version": "1"` and fields of
its own (`orgId`, `state`, `title`, `message`, each alert's `values`, `valueString`,
`silenceURL`, `dashboardURL`, `panelURL`): they are accepted and ignored. An alert without an
`alertname` label (Grafana's no-data and error alerts carry "DatasourceNoData" or
"DatasourceError"; a custom label set may have none) is named by its group's `alertname`
(groupLabels, then commonLabels), else it has no name and only counts as received: no rule
matches it. Its identity is the sender's fingerprint, else one derived from its labels.

What Alertmanager accepts is accepted (`clip`): a label or annotation value longer than
MAX_TEXT is cut, beyond MAX_LABELS labels or annotations the rest are dropped, and the alert
says so (`Alert.clipped`, on the incident's timeline). Refusing one alert would make
Alertmanager drop its whole group without a retry.

An alert is a second kind of signal into the same engine as check observations. Its
fingerprint identifies it across Alertmanager's retries and repeats, so the same alert never
opens a second incident or triggers a second remediation; its `startsAt` identifies the episode,
so a firing delivered after its own resolution (`Resolutions`) does not open a new one.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from daemon.core.redaction import excerpt
from daemon.core.units import parse_time

MAX_LABELS = 64
MAX_TEXT = 4096


# Never changed once made, but not frozen: a frozen dataclass's __init__ sets each field
# through object.__setattr__, several times the cost of the rest of making an alert.
@dataclass(slots=True)
class Alert:
    name: str
    firing: bool
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: float | None = None
    ends_at: float | None = None  # a resolved alert's: when it resolved, on the sender's clock
    generator_url: str = ""
    source: str = "alertmanager"
    clipped: str = ""  # what was cut or dropped of an alert beyond the bounds (`clip`)
    # The sender's notification group (a digest of Alertmanager's groupKey; "" for none) and
    # how many of its alerts the sender left out of this notification (`truncatedAlerts`).
    group: str = ""
    truncated: int = 0

    def summary(self) -> str:
        text = self.annotations.get("summary") or self.annotations.get("description") or ""
        return text or f"{self.name} {' '.join(f'{k}={v}' for k, v in sorted(self.labels.items()))}"


# How long a resolution is remembered, on runbookd's clock: twelve times Alertmanager's default
# resolve_timeout (5m), far beyond its notification retries (they stop at the group_interval) and
# a signed webhook's tolerance. Short enough that an alert re-sent with its old startsAt after a
# sender's restart is not held back for long: it opens an incident again an hour on.
RESOLVED_RETENTION = 3600.0
# At most this many per rule, the oldest dropped first: an alert storm costs bounded memory and
# store rows (some 10,000 x 200 bytes) whatever the retention.
MAX_RESOLVED = 10_000


class Resolutions:
    """The episodes of a rule's alerts that resolved lately, by fingerprint.

    An episode is known by the sender's `startsAt`: a resolved alert carries its firing one's,
    a new episode of the same fingerprint a later one. A firing alert whose `startsAt` is not
    after the resolved episode's is a late delivery (the other Alertmanager of an HA pair, a
    retry) and must not reopen it. Comparing the sender's timestamps with each other is immune
    to skew between its clock and ours; an alert without one (a generic webhook) is never held
    back. runbookd's clock only dates the records, to expire them.

    Two str -> float dicts in the order recorded (the oldest first, for expiry): objects the
    cyclic garbage collector does not track, as for the firing fingerprints.
    """

    __slots__ = ("_recorded", "_starts")

    def __init__(self) -> None:
        self._starts: dict[str, float] = {}  # the resolved episode's startsAt
        self._recorded: dict[str, float] = {}  # when runbookd recorded it

    def __len__(self) -> int:
        return len(self._starts)

    def stale(self, alert: Alert) -> bool:
        """A firing alert of an episode already resolved (or of an older one)."""
        resolved = self._starts.get(alert.fingerprint)
        return resolved is not None and alert.starts_at is not None and alert.starts_at <= resolved

    def news(self, alert: Alert) -> bool:
        """A resolution worth recording: it has a start, later than any recorded for it."""
        resolved = self._starts.get(alert.fingerprint)
        return alert.starts_at is not None and (resolved is None or alert.starts_at > resolved)

    def record(self, alert: Alert, now: float) -> dict[str, Any]:
        """Remember a resolution (`news`); returns the store writes: its record, and None for
        the records it pushes out (expired, or the oldest beyond MAX_RESOLVED)."""
        fp, starts_at = alert.fingerprint, alert.starts_at
        assert starts_at is not None
        self._starts.pop(fp, None)
        self._recorded.pop(fp, None)  # re-inserted last: dict order is the recording order
        self._starts[fp], self._recorded[fp] = starts_at, now
        writes: dict[str, Any] = dict.fromkeys(self._expire(now))
        writes[fp] = {"starts_at": starts_at, "ends_at": alert.ends_at, "recorded_at": now}
        return writes

    def restorer(self, fp: str) -> Callable[[], None]:
        """What puts `fp`'s record back as it is now (undoing a request not committed). Records
        `record` expired meanwhile stay gone: they were due to go, and the store drops them
        again after a restart."""
        starts, recorded = self._starts.get(fp), self._recorded.get(fp)

        def restore() -> None:
            self._starts.pop(fp, None)
            self._recorded.pop(fp, None)
            if starts is not None and recorded is not None:
                self._starts[fp], self._recorded[fp] = starts, recorded

        return restore

    def restore(self, stored: dict[str, Any], now: float) -> list[str]:
        """Load the store's records; returns the keys to delete (expired, or malformed)."""
        dropped: list[str] = []
        kept: list[tuple[float, str, float]] = []
        for fp, doc in stored.items():
            try:
                kept.append((float(doc["recorded_at"]), fp, float(doc["starts_at"])))
            except (TypeError, KeyError, ValueError):
                dropped.append(fp)
        for recorded, fp, starts_at in sorted(kept):
            self._starts[fp], self._recorded[fp] = starts_at, recorded
        return dropped + self._expire(now)

    def _expire(self, now: float) -> list[str]:
        cutoff, excess = now - RESOLVED_RETENTION, len(self._recorded) - MAX_RESOLVED
        gone: list[str] = []
        for fp, recorded in self._recorded.items():  # oldest first
            if recorded >= cutoff and len(gone) >= excess:
                break
            gone.append(fp)
        for fp in gone:
            del self._starts[fp], self._recorded[fp]
        return gone


class AlertCapReached(Exception):
    """Some new firing alerts of a request were refused: their rule, or runbookd as a whole,
    had as many firing as its cap (`runbookd.alerts`). Everything else in the request was
    applied and committed (resolutions, alerts already firing, new ones within the caps), so
    the sender may resend the whole request: what was applied changes nothing the second time.
    """

    def __init__(self, routed: list[list[str]], refused: int) -> None:
        super().__init__(f"{refused} new firing alerts refused: at the cap of firing alerts")
        self.routed = routed  # each alert's rules, as `Engine.alerts` returns them
        self.refused = refused


_CANONICAL = json.JSONEncoder(separators=(",", ":"))


def fingerprint(labels: dict[str, str]) -> str:
    """Stable identity from the label set, for senders that do not give one."""
    canonical = _CANONICAL.encode(sorted(labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1024)
def group_digest(group_key: str) -> str:
    """The identity of a sender's notification group: its groupKey's fingerprint. Cached: a
    sender notifies the same groups again and again."""
    return fingerprint({"groupKey": group_key})


def _timestamp(value: str | None) -> float | None:
    """Epoch seconds of a time the model checked (`_a_time`); None when not set."""
    # Alertmanager writes the zero time "0001-01-01T00:00:00Z" for "not set".
    if not value or value.startswith("0001-"):
        return None
    return _parsed_time(value)


# The alerts of one evaluation, and a group's repeats, carry the same times.
_parsed_time = functools.lru_cache(maxsize=1024)(parse_time)


class _Lenient(BaseModel):
    # Senders add fields (Grafana does); unknown ones are ignored, known ones are checked.
    # Strict: JSON false is not 0 and "3" is not 3.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


def _integral(value: Any) -> Any:
    # JSON has one kind of number: 2.0 is the integer 2 (JSON Schema agrees), 2.5 is not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON writes it, 2 or 2.0; never true, "2" or 2.5.
JsonInt = Annotated[int, BeforeValidator(_integral)]

Labels = dict[str, str]


def _sent_time(value: Any) -> float | None:
    """A time as the sender wrote it (ISO 8601 with a zone, between 2000 and 2100:
    daemon.units.parse_time), as epoch seconds, parsed once; None when not set. A time no sender
    means (year 9999, no zone) would decide which episode an alert belongs to."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("a time is a string, ISO 8601 with a zone")
    return _timestamp(value)


# In the model, a time is parsed once (it used to be checked there and parsed again after).
SentTime = Annotated[float | None, BeforeValidator(_sent_time)]


class WebhookAlert(_Lenient):
    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels | None = None  # Grafana may send null
    startsAt: SentTime = None  # camelCase: the sender's own field names
    endsAt: SentTime = None
    generatorURL: str = ""
    fingerprint: str = ""

    def to_alert(
        self, source: str, *, default_name: str = "", group: str = "", truncated: int = 0
    ) -> Alert:
        # The identity comes from the labels as sent, before any is cut or dropped.
        identity = self.fingerprint[:MAX_KEY] or fingerprint(self.labels)
        labels, label_notes = clip(self.labels, "labels")
        annotations, notes = clip(self.annotations or {}, "annotations")
        name = labels.get("alertname") or default_name
        return Alert(
            name=name,
            firing=self.status == "firing",
            fingerprint=identity,
            labels=labels,
            annotations=annotations,
            starts_at=self.startsAt,
            ends_at=self.endsAt,
            generator_url=self.generatorURL[:MAX_TEXT],
            source=source,
            clipped="; ".join(label_notes + notes),
            group=group,
            truncated=truncated,
        )


MAX_KEY = 256


def _within_bounds(values: Labels) -> bool:
    # A plain loop: the cheapest test for the few labels an alert has.
    if len(values) > MAX_LABELS:
        return False
    for key, value in values.items():  # noqa: SIM110 (all() of a generator: twice the cost)
        if len(key) > MAX_KEY or len(value) > MAX_TEXT:
            return False
    return True


def clip(values: Labels, what: str) -> tuple[Labels, list[str]]:
    """`values` within the bounds (MAX_LABELS entries, keys of MAX_KEY and values of MAX_TEXT
    characters), and what was cut, for the timeline. Beyond MAX_LABELS, `alertname` is kept
    and the others in the order of their keys, so the same labels keep the same ones."""
    if _within_bounds(values):
        return values, []  # as nearly every alert is: nothing to copy
    notes: list[str] = []
    keys = list(values)
    if len(keys) > MAX_LABELS:
        keys = sorted(keys, key=lambda k: (k != "alertname", k))
        notes.append(
            f"{len(keys) - MAX_LABELS} of {len(keys)} {what} dropped (at most {MAX_LABELS})"
        )
        keys = keys[:MAX_LABELS]
    kept: Labels = {}
    cut = 0
    for key in keys:
        value = values[key]
        if len(key) > MAX_KEY or len(value) > MAX_TEXT:
            cut += 1
        kept[key[:MAX_KEY]] = value[:MAX_TEXT]
    if cut:
        notes.append(f"{cut} {what} cut to {MAX_KEY} characters a name, {MAX_TEXT} a value")
    return kept, notes


class AlertmanagerWebhook(_Lenient):
    """The body Alertmanager (version 4) and Grafana (version 1) POST to a webhook receiver."""

    version: Literal["4", "1"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""
    truncatedAlerts: JsonInt = Field(default=0, ge=0, le=2**31)
    groupLabels: Labels | None = None
    commonLabels: Labels | None = None
    alerts: list[WebhookAlert] = Field(max_length=10_000)

    def to_alerts(self) -> list[Alert]:
        source = "grafana" if self.version == "1" else "alertmanager"
        # The group's own alertname names an alert that has none.
        default = (self.groupLabels or {}).get("alertname") or (self.commonLabels or {}).get(
            "alertname", ""
        )
        group = group_digest(self.groupKey) if self.groupKey else ""
        default, truncated = default[:MAX_TEXT], self.truncatedAlerts
        alerts: list[Alert] = []
        for a in self.alerts:
            # WebhookAlert.to_alert in one loop, for the alerts within the bounds (nearly
            # all): a method call and a dozen keyword arguments per alert were a tenth of
            # intake's work at ten alerts per request.
            labels, annotations = a.labels, a.annotations or {}
            if not (_within_bounds(labels) and _within_bounds(annotations)):
                alerts.append(
                    a.to_alert(source, default_name=default, group=group, truncated=truncated)
                )
                continue
            alerts.append(
                Alert(
                    labels.get("alertname") or default,
                    a.status == "firing",
                    a.fingerprint[:MAX_KEY] or fingerprint(labels),
                    labels,
                    annotations,
                    a.startsAt,
                    a.endsAt,
                    a.generatorURL[:MAX_TEXT],
                    source,
                    "",
                    group,
                    truncated,
                )
            )
        return alerts


MAX_ITEMS = 10_000


def alerts_from_json(doc: Any, paths: dict[str, str], source: str, each: str = "") -> list[Alert]:
    """Map a generic JSON webhook body to alerts with configured dotted paths.

    With `each`, the list at that path holds the alerts and `paths` are relative to each item;
    without, the body is one alert. See `alert_from_json`. Raises ValueError naming what is
    missing or cannot be mapped: a body is refused whole rather than answered for alerts it
    did not read.
    """
    if not each:
        return [alert_from_json(doc, paths, source)]
    items = _get(doc, each, each)
    if not isinstance(items, list):
        raise ValueError(f"{each}: expected a list of alerts")
    if len(items) > MAX_ITEMS:
        raise ValueError(f"{each}: more than {MAX_ITEMS} alerts")
    alerts: list[Alert] = []
    for index, item in enumerate(items):
        try:
            alerts.append(alert_from_json(item, paths, source))
        except ValueError as exc:
            raise ValueError(f"{each}.{index}.{exc}") from None
    return alerts


def _get(doc: Any, path: str, whole: str) -> Any:
    value = doc
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            if len(value) > 1:
                # Reading one item of several would ignore the others, which may fire.
                raise ValueError(
                    f"{whole}: reads one item of a list of {len(value)}; map each one "
                    "with the webhook's `each` setting"
                )
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise ValueError(f"{whole}: not found in the body")
    return value


def alert_from_json(doc: Any, paths: dict[str, str], source: str) -> Alert:
    """Map a generic JSON value to an alert with configured dotted paths.

    `paths` has `name`, `status` (firing when the value is one of FIRING_WORDS, resolved
    when one of RESOLVED_WORDS, any case; anything else is refused: a typo must not resolve
    an incident), optional `fingerprint`, `summary` and
    `labels.<name>` entries. A path steps into objects by key and into a list of one item by
    index (`alerts.0.title`); a list of several is refused (`each` maps them all). Raises
    ValueError naming the path that is missing or not a plain value. A text longer than
    MAX_TEXT is cut, as for Alertmanager's alerts (`Alert.clipped` says so).
    """
    cut: list[str] = []

    def text(path: str) -> str:
        value = _get(doc, path, path)
        # A mapping or list would become Python's repr: refuse it rather than guess.
        if isinstance(value, dict | list):
            raise ValueError(f"{path}: expected a string or number, not an object or list")
        result = str(value).lower() if isinstance(value, bool) else str(value)
        if len(result) > MAX_TEXT:
            cut.append(path)
        return result[:MAX_TEXT]

    name = text(paths["name"])
    if not name:
        raise ValueError(f"{paths['name']}: the alert name is empty")
    firing = _firing(text(paths["status"]), paths["status"])
    labels = {"alertname": name}
    for key, path in paths.items():
        if key.startswith("labels."):
            labels[key.removeprefix("labels.")] = text(path)
    annotations = {"summary": text(paths["summary"])} if "summary" in paths else {}
    identity = text(paths["fingerprint"]) if "fingerprint" in paths else fingerprint(labels)
    clipped = f"cut to {MAX_TEXT} characters: {', '.join(cut)}" if cut else ""
    return Alert(name, firing, identity, labels, annotations, source=source, clipped=clipped)


FIRING_WORDS = frozenset({"firing", "alerting", "triggered", "open", "critical", "down", "true"})
RESOLVED_WORDS = frozenset(
    {"resolved", "ok", "normal", "closed", "recovered", "cleared", "up", "inactive", "false"}
)


def _firing(status: str, path: str) -> bool:
    word = status.lower()
    if word in FIRING_WORDS:
        return True
    if word in RESOLVED_WORDS:
        return False
    raise ValueError(
        f"{path}: {excerpt(status, 40)!r} is neither firing ({', '.join(sorted(FIRING_WORDS))}) "
        f"nor resolved ({', '.join(sorted(RESOLVED_WORDS))})"
    )
