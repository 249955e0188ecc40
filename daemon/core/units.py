"""Config value types: durations ("30s", "5m", "1h30m"), ratios ("5%" or 0.05), secrets."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    SecretStr,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema

from daemon.core.files import FileRefused, read_regular_file

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DAY = 86400.0
# The longest duration a config may give, unless a field says otherwise: a year, leap or
# not. Every schedule and window runbookd has fits (a weekly TLS check, a daily backup RPO,
# a month of history); longer is a typo (`3000d` for `30d`), and it would push deadlines
# and timestamps towards the limits of dates and timers.
MAX_DURATION = 366 * DAY


def parse_duration(value: object) -> float:
    """Return seconds, finite and not negative. Bare numbers are refused: "30" could mean
    seconds or minutes."""
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if text and pos == len(text):
            if not math.isfinite(total):  # enough digits overflow to inf
                raise ValueError(f"not a finite duration: {_clip(text)!r}")
            return total
    raise ValueError(f"not a duration: {_clip(value)!r} (use e.g. 500ms, 30s, 5m, 1h)")


def _clip(value: object, limit: int = 20) -> object:
    # A message repeats what was written, but not four hundred digits of it.
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "..."
    return value


def format_duration(seconds: float) -> str:
    """Seconds the way a config writes them: 0.1 -> "100ms", 5400 -> "1h30m", 0 -> "0s"."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    parts: list[str] = []
    rest = seconds
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        whole = int(rest // size)
        if whole:
            parts.append(f"{whole}{unit}")
            rest -= whole * size
    rest = round(rest, 3)
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)


def is_duration_parser(item: object) -> bool:
    """True for the validator that makes a field a duration (the loader words its bounds)."""
    return isinstance(item, BeforeValidator) and item.func is parse_duration


def parse_ratio(value: object) -> float:
    """ "5%" -> 0.05; 0.05 -> 0.05. A ratio lies within [0, 1]."""
    number: float | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            number = None
    if number is None or not 0.0 <= number <= 1.0:
        raise ValueError(f"not a ratio: {value!r} (use e.g. 0.05 or 5%)")
    return number


# Durations in seconds, finite (`parse_duration`). `Duration`: 0 <= d <= MAX_DURATION (a
# cooldown, a grace period); `PositiveDuration`: 0 < d <= MAX_DURATION (a timeout, an
# interval, a window: zero would time out at once, spin, or count nothing). A field narrows
# its range with Field(gt=, ge=, le=) on top, e.g. `Duration = Field(30.0, ge=0.1)`; the
# loader words every bound in time units ("must be at least 100ms, not 0s").
_DURATION = BeforeValidator(parse_duration)
Duration = Annotated[float, _DURATION, Field(ge=0, le=MAX_DURATION)]
PositiveDuration = Annotated[float, _DURATION, Field(gt=0, le=MAX_DURATION)]
# Only to build a duration type with a wider maximum; give it both bounds.
UnboundedDuration = Annotated[float, _DURATION]
Ratio = Annotated[float, BeforeValidator(parse_ratio)]


def _refuse_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not {str(value).lower()}")
    return value


# Keys of a core schema that hold no validator to visit.
_NOT_SCHEMAS = frozenset({"metadata", "serialization", "ref", "ctx", "function", "default"})


def _takes_number(schema: Any) -> bool:
    """True for an int or float schema, also optional or in a union without a bool."""
    kind = schema.get("type")
    if kind in ("int", "float"):
        return True
    if kind == "nullable":
        return _takes_number(schema["schema"])
    if kind == "union":
        choices = [c[0] if isinstance(c, tuple) else c for c in schema["choices"]]
        if any(c.get("type") == "bool" for c in choices):
            return False
        return any(_takes_number(c) for c in choices)
    return False


def _refusing_bools(schema: Any) -> Any:
    """`schema` with each place that takes a number behind `_refuse_bool`: lax int and float
    take true as 1, and a lax union picks them for it. Where a field is a union, the whole
    union is guarded, so an error names the field rather than one of its choices."""
    if isinstance(schema, list | tuple):
        return type(schema)(_refusing_bools(item) for item in schema)
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") == "function-before" and schema["function"]["function"] is _refuse_bool:
        return schema  # a nested model, guarded when it was built
    if _takes_number(schema):
        return core_schema.no_info_before_validator_function(_refuse_bool, schema)
    return {
        key: value if key in _NOT_SCHEMAS else _refusing_bools(value)
        for key, value in schema.items()
    }


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen, and no
    number is infinite or NaN (YAML's `.inf` and `.nan`; a limit of .inf is no limit), nor
    true or false (pydantic's lax mode reads `min_samples: true` as 1)."""

    # defer_build: a model builds its own validator when first used alone; one that is only
    # part of the config document lives in the document's validator, not twice.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        # Once per class, when pydantic builds it: no cost until a number is validated.
        guarded: CoreSchema = _refusing_bools(handler(source))
        return guarded


# A secret is a token, a password or a URL: a file larger than this is the wrong file.
MAX_SECRET_FILE = 64 * 1024


class SecretFileError(ValueError):
    """A `<field>_file` that cannot be read; `key` names it, for the loader to point at."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.detail = detail


class SecretsModel(StrictModel):
    """A model whose `SecretStr` fields may also be given as `<field>_file` (a path to read).

    The file form keeps secrets out of the config text, e.g. systemd's LoadCredential=.
    Only a regular file of at most MAX_SECRET_FILE bytes is read (daemon/files.py).
    """

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            file_key = f"{name}_file"
            if file_key not in data or field.annotation not in (SecretStr, SecretStr | None):
                continue
            if name in data:
                raise ValueError(f"give {name} or {file_key}, not both")
            data[name] = _read_secret_file(file_key, str(data.pop(file_key)))
        return data


def _read_secret_file(key: str, path: str) -> str:
    try:
        raw = read_regular_file(path, MAX_SECRET_FILE)
    except FileRefused as exc:
        raise SecretFileError(key, f"{path}: {exc}") from None
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileError(key, f"{path}: not UTF-8") from None


# Every time a request gives lies in [EARLIEST, LATEST): NaN, infinities and dates no one
# means (1e19, year 1) are refused, so every time stored is one a person and a tool can print.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
LATEST = datetime(2100, 1, 1, tzinfo=UTC).timestamp()


def parse_time(value: object) -> float:
    """Epoch seconds, or an ISO 8601 time with a zone; between EARLIEST and LATEST."""
    seconds: float | int | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value  # compared before float(): a 400-digit int would overflow
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            seconds = parsed.timestamp() if parsed.tzinfo is not None else None
    if seconds is None:
        raise ValueError(
            "a time is epoch seconds or ISO 8601 with a zone, e.g. 2026-11-28T03:00:00Z"
        )
    if not EARLIEST <= seconds < LATEST:  # NaN too: it compares false
        raise ValueError("a time must lie between 2000-01-01 and 2100-01-01 (UTC)")
    return float(seconds)


def format_bytes(size: float) -> str:
    """1000 B, 1.5 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
