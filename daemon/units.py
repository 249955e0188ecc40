"""Config value types: durations ("30s", "5m", "1h30m"), ratios ("5%" or 0.05), secrets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr, model_validator

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Return seconds. Bare numbers are refused: "30" could mean seconds or minutes."""
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if text and pos == len(text):
            return total
    raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 30s, 5m, 1h)")


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


Duration = Annotated[float, BeforeValidator(parse_duration)]
Ratio = Annotated[float, BeforeValidator(parse_ratio)]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretsModel(StrictModel):
    """A model whose `SecretStr` fields may also be given as `<field>_file` (a path to read).

    The file form keeps secrets out of the config text, e.g. systemd's LoadCredential=.
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
            path = Path(str(data.pop(file_key)))
            try:
                data[name] = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{file_key}: cannot read {path}: {exc.strerror}") from None
        return data
