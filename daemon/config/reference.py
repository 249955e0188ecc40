"""`runbookd config reference`: the configuration reference (Markdown), made from the models.

Each key's type, default and range come from its pydantic field (constraints, Literal
choices, patterns), its meaning from the field's `description`, a type's introduction from
its model's docstring and its example from the model's `example` (a config text that
tests/unit/test_reference.py loads as `check-config` does). docs/configuration.md is this
output, and that test fails when it is out of date. The output depends on the models alone:
declared field order, types sorted by name, nothing from the clock or the host.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, BeforeValidator, ByteSize, JsonValue, SecretStr
from pydantic.fields import FieldInfo

from checks.base import CHECKS, CheckConfig
from daemon.config.document import RunbookConfig
from daemon.config.loader import load_config_text
from daemon.config.problems import ConfigError
from daemon.config.settings import DaemonSettings
from daemon.config.status_page import StatusPageConfig
from daemon.config.webhooks import WebhookConfig
from daemon.core import plugins
from daemon.core.units import (
    MAX_DURATION,
    SecretsModel,
    format_duration,
    is_duration_parser,
    parse_ratio,
)
from daemon.deploys.config import DeploysConfig
from daemon.jobs.config import JobConfig
from daemon.rules.config import THRESHOLD_ONLY, AlertMatch, RuleConfig
from daemon.rules.expr import Condition
from remediations.base import REMEDIATIONS, RemediationConfig

Model = type[BaseModel]

PREFACE = """\
# Configuration reference

This file is generated from the config models by `runbookd config reference` (`make docs`
writes it here); edit the models' descriptions, not this file.

A config file is YAML with up to six sections, each optional. `runbookd check-config FILE`
validates it as the daemon does: exit 0, or exit 2 with one `FILE:LINE path: problem` line
per problem.

How values are written:

- **duration**: `500ms`, `30s`, `5m`, `1h`, `1h30m`, `2d`; a bare number is refused. From 0s
  to 366d unless the range says otherwise.
- **ratio**: `0.05` or `5%`, from 0 to 1.
- **size**: bytes, or with a unit: `512KiB`, `1MiB`, `1MB`.
- **secret**: the value, or `KEY_file: /path/to/file` (a regular file of at most 64 KiB,
  read when the config loads; systemd's `LoadCredential=`). Secrets are masked in every message.
- `${VAR}` and `${VAR:-default}` take a value from the environment; `$$` is a literal `$`.
- Unknown keys are errors; `true` and `false` are not numbers; `yes` and `on` are text.
- In the tables, **required** marks a key that must be given, and **—** a key unset by default.
"""


def _unwrap(tp: Any, metadata: Iterable[Any] = ()) -> tuple[Any, list[Any]]:
    """The type under Annotated and Optional, with every constraint met on the way."""
    found = list(metadata)
    while True:
        if get_origin(tp) is Annotated:
            tp, *extra = get_args(tp)
            for item in extra:
                found += item.metadata if isinstance(item, FieldInfo) else [item]
        elif get_origin(tp) in (Union, UnionType) and NoneType in get_args(tp):
            rest = [arg for arg in get_args(tp) if arg is not NoneType]
            if len(rest) != 1:
                return tp, _flat(found)
            tp = rest[0]
        else:
            return tp, _flat(found)


def _flat(metadata: list[Any]) -> list[Any]:
    return [
        m for item in metadata for m in (item if isinstance(item, at.GroupedMetadata) else [item])
    ]


def _number(value: Any, unit: str) -> str:
    if unit == "duration":
        return format_duration(value)
    if unit == "size":
        size = int(value)
        for suffix, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
            if size >= factor and size % factor == 0:
                return f"{size // factor}{suffix}"
        return f"{size} bytes"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _unit(tp: Any, metadata: list[Any]) -> str:
    if any(is_duration_parser(m) for m in metadata):
        return "duration"
    if any(isinstance(m, BeforeValidator) and m.func is parse_ratio for m in metadata):
        return "ratio"
    return "size" if tp is ByteSize else ""


def _range(tp: Any, metadata: list[Any]) -> list[str]:
    """The constraints as text: bounds (the strictest of each side), lengths, pattern."""
    unit = _unit(tp, metadata)
    # (bound, strict): the highest lower bound, strict on a tie; the lowest upper one.
    lows: list[tuple[Any, bool]] = [(m.ge, False) for m in metadata if isinstance(m, at.Ge)]
    lows += [(m.gt, True) for m in metadata if isinstance(m, at.Gt)]
    highs: list[tuple[Any, bool]] = [(m.le, False) for m in metadata if isinstance(m, at.Le)]
    highs += [(m.lt, True) for m in metadata if isinstance(m, at.Lt)]
    if unit == "duration":  # every duration is 0s to MAX_DURATION unless it says otherwise
        lows, highs = (
            [b for b in lows if b != (0, False)],
            [b for b in highs if b != (MAX_DURATION, False)],
        )
    parts = [f"{'>' if b[1] else '≥'} {_number(b[0], unit)}" for b in sorted(lows)[-1:]]
    parts += [
        f"{'<' if b[1] else '≤'} {_number(b[0], unit)}"
        for b in sorted(highs, key=lambda b: (b[0], not b[1]))[:1]
    ]
    what = {list: "items", tuple: "items", dict: "entries"}.get(get_origin(tp), "characters")
    for m in metadata:
        if isinstance(m, at.MinLen):
            parts.append("not empty" if m.min_length == 1 else f"at least {m.min_length} {what}")
        elif isinstance(m, at.MaxLen):
            parts.append(f"at most {m.max_length} {what}")
        elif getattr(m, "pattern", None):
            parts.append(f"pattern `{m.pattern}`")
    return parts


Namer = Callable[[Model], str]


def _type(tp: Any, metadata: Iterable[Any], name_of: Namer) -> str:
    tp, found = _unwrap(tp, metadata)
    unit = _unit(tp, found)
    if unit:
        return unit
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        choices = [f"`{json.dumps(a) if not isinstance(a, str) else a}`" for a in args]
        return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"
    if origin in (Union, UnionType):
        return " or ".join(_type(a, (), name_of) for a in args if a is not NoneType)
    if origin in (list, tuple, frozenset):
        return f"list of {_item(args[0], name_of)}"
    if origin is dict:
        return f"map of {_item(args[0], name_of)} to {_item(args[1], name_of)}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"object ({name_of(tp)})"
    names: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
    names[Path] = "path"
    names |= {SecretStr: "secret", Condition: "condition", JsonValue: "any JSON value"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _item(tp: Any, name_of: Namer) -> str:
    inner, found = _unwrap(tp)
    limits = _range(inner, found)
    text = _type(tp, (), name_of)
    return f"{text} ({', '.join(limits)})" if limits else text


def _default(field: FieldInfo, unit: str) -> str:
    if field.is_required():
        return "**required**"
    factory = field.default_factory
    if factory is None:
        value = field.default
    elif factory in (list, dict) or getattr(factory, "__name__", "") == "<lambda>":
        value = factory()  # type: ignore[call-arg]
    else:
        return "see meaning"  # computed where the daemon runs (e.g. the host's name)
    if value is None:
        return "—"
    if isinstance(value, BaseModel):
        return "see its keys"
    if (unit or isinstance(value, float)) and isinstance(value, int | float):
        return f"`{_number(value, unit)}`"
    if isinstance(value, str) and value:
        return f"`{value}`"
    return f"`{json.dumps(value if not isinstance(value, tuple) else list(value))}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


class _Writer:
    def __init__(self) -> None:
        self.out: list[str] = [PREFACE]
        self.documented: dict[Model, str] = {}
        self.said: set[str] = set()

    def text(self, *paragraphs: str | None, once: bool = False) -> None:
        """`once`: not when said already (a docstring introducing a section and its table)."""
        for text in paragraphs:
            if text and not (once and text in self.said):
                self.said.add(text)
                self.out.append(inspect.cleandoc(text) + "\n")

    def heading(self, level: int, title: str) -> None:
        self.out.append(f"{'#' * min(level, 6)} {title}\n")

    def example(self, model: Model) -> None:
        example = getattr(model, "example", "")
        if example:
            self.out.append("```yaml\n" + inspect.cleandoc(example) + "\n```\n")

    def name(self, key: str, nested: list[tuple[Model, str]], model: Model) -> str:
        """Where a nested model is documented: here, the first time it appears."""
        if model not in self.documented:
            # A choice of models under one key (`store: {type: ...}`) names each by its type.
            tag = model.model_fields.get("type")
            choice = get_args(tag.annotation) if tag is not None else ()
            label = f"{key} (type: {choice[0]})" if len(choice) == 1 else key
            self.documented[model] = f"`{label}`"
            nested.append((model, label))
        return f"see {self.documented[model]}"

    def model(
        self,
        model: Model,
        path: str,
        level: int,
        *,
        skip: Iterable[str] = (),
        types: dict[str, Any] | None = None,
    ) -> None:
        """A table of the model's keys (but `skip`), then each nested model once."""
        nested: list[tuple[Model, str]] = []
        rows = ["| key | type | default | range | meaning |", "|---|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if name in skip:
                continue
            field_key = field.alias or name
            annotation = (types or {}).get(name, field.annotation)
            tp, found = _unwrap(annotation, field.metadata)
            where = f"{path}.{field_key}{'[]' if get_origin(tp) is list else ''}"
            kind = _type(annotation, field.metadata, functools.partial(self.name, where, nested))
            if issubclass(model, SecretsModel) and tp is SecretStr:
                kind += f" (or `{field_key}_file`)"
            limits = ", ".join(_range(tp, found))
            meaning = field.description or ""
            row = [f"`{field_key}`", kind, _default(field, _unit(tp, found)), limits, meaning]
            rows.append("| " + " | ".join(_cell(c) for c in row) + " |")
        self.out.append("\n".join(rows) + "\n")
        for sub, label in nested:
            self.heading(level + 1, f"`{label}`")
            self.text(sub.__doc__, once=True)
            self.model(sub, label.split(" ")[0], level + 1)


def _own_fields(model: Model, base: Model) -> set[str]:
    """The base's fields that the model leaves as the base has them: shown once, with it."""
    mine = model.model_fields
    return {n for n, f in base.model_fields.items() if repr(mine.get(n)) == repr(f)}


def _check_values(name: str, model: Model) -> str | None:
    try:
        config = load_config_text(inspect.cleandoc(getattr(model, "example", "")))
    except ConfigError:
        return None  # the example test says why
    check = next((c for c in config.checks.values() if c.type == name), None)
    values = check.value_names() if check is not None else None
    if not values:
        return None
    return "Values, as the example configures it: " + ", ".join(f"`{v}`" for v in sorted(values))


def _plugins(section: str, w: _Writer) -> None:
    """A section of typed entries: the keys they share, then each registered type."""
    registry, base = (
        (CHECKS, CheckConfig) if section == "checks" else (REMEDIATIONS, RemediationConfig)
    )
    w.heading(2, f"`{section}:`")
    w.text(RunbookConfig.model_fields[section].description)
    w.heading(3, f"Keys every {section[:-1]} has")
    w.model(base, f"{section}.NAME", 3)
    for name in registry:
        cls = registry.get(name)
        model = cls.Config
        w.heading(3, f"`{name}`")
        w.text(model.__doc__)
        if getattr(cls, "destructive", False):
            w.text(
                "Destructive: waits for an operator's approval unless `require_approval: false`."
            )
        if getattr(cls, "notifier", False):
            w.text(
                "A notifier: no cooldown, budget, target lock or circuit breaker holds it "
                "(`max_runs` does), and a rule's `on_blind` may name it."
            )
        skip = _own_fields(model, base) | {"type"}
        w.text(f"`type: {name}`, the keys every {section[:-1]} has, and:")
        w.model(model, f"{section}.NAME", 3, skip=skip)
        w.text(_check_values(name, model) if section == "checks" else None)
        w.example(model)


def reference() -> str:
    """The whole reference, for every registered type (plugins included)."""
    plugins.load()
    w = _Writer()
    fields = RunbookConfig.model_fields
    w.heading(2, "`runbookd:`")
    w.text(fields["runbookd"].description)
    w.model(DaemonSettings, "runbookd", 2)
    w.example(DaemonSettings)
    _plugins("checks", w)
    _plugins("remediations", w)
    w.heading(2, "`rules:`")
    w.text(fields["rules"].description, RuleConfig.__doc__)
    w.heading(3, "Rules on check values")
    w.model(RuleConfig, "rules.NAME", 3, types={"when": Condition})
    w.example(RuleConfig)
    w.heading(3, "Rules on pushed alerts")
    w.text(AlertMatch.__doc__)
    w.model(RuleConfig, "rules.NAME", 3, skip=THRESHOLD_ONLY, types={"when": AlertMatch})
    w.example(AlertMatch)
    w.heading(2, "`webhooks:`")
    w.text(fields["webhooks"].description)
    w.model(WebhookConfig, "webhooks.NAME", 2)
    w.example(WebhookConfig)
    w.heading(2, "`jobs:`")
    w.text(fields["jobs"].description, JobConfig.__doc__)
    w.model(JobConfig, "jobs.NAME", 2)
    w.example(JobConfig)
    w.heading(2, "`deploys:`")
    w.text(fields["deploys"].description, DeploysConfig.__doc__)
    w.model(DeploysConfig, "deploys", 2)
    w.example(DeploysConfig)
    w.heading(2, "`status_page:`")
    w.text(fields["status_page"].description, StatusPageConfig.__doc__)
    w.model(StatusPageConfig, "status_page", 2)
    w.example(StatusPageConfig)
    return "\n".join(w.out)
