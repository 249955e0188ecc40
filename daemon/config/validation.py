"""pydantic's errors as problems: each at its YAML path and line, in words for people.

Also `redacted`: no credential given in the config is repeated in a problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from daemon.config import document
from daemon.config.problems import Problem, YamlPath, dotted, line_of
from daemon.config.reader import Reader
from daemon.core.redaction import redact_credentials
from daemon.core.units import (
    SecretFileError,
    SecretsModel,
    format_duration,
    is_duration_parser,
    parse_duration,
)

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


def _describe(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "an empty value"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


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


def validation_problems(
    exc: ValidationError, model: type[BaseModel], data: Any, reader: Reader
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
        line = line_of(path, reader.lines)
        problems.append(Problem(reader.filename, line, dotted(path), message))
    return problems


def redacted(problems: list[Problem], data: dict[str, Any] | None) -> list[Problem]:
    """Problems without credentials: URL and DSN passwords, and every value given to a
    secret field (a message about another field may quote it)."""
    secrets: set[str] = set()
    if data is not None:
        _secret_values(document.registered_model(), data, secrets)
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
