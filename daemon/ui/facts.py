"""What a record's data says, for a page: a job run's report (a backup's size, checksum and row
counts; a restore drill's times against its RTO and RPO, its verified counts and checks, what
failed), a deploy's source data, a timeline entry's facts.

One general reading of the JSON a record holds, not one template per job type: a plugin's
new field shows up without a console change. Each value reads as everywhere in the console
and the incident report (daemon/core/values.py: units from names, None as an em dash, never 0);
nested values past what a table shows are written as pairs, cut at `values.MAX_TEXT`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from daemon.core import values
from daemon.core.values import EM_DASH

MAX_ROWS = 500  # a table's rows (a drill's row counts of many tables): the rest are counted


@dataclass(frozen=True, slots=True)
class Table:
    columns: list[str]
    rows: list[list[str]]
    more: int = 0  # rows not shown
    bad: list[bool] = field(default_factory=list)  # by row: a count that differs, a check


@dataclass(frozen=True, slots=True)
class Fact:
    """One field: `text`, or `items` (a list), or `table` (a list of objects, or an object
    of scalars as two columns)."""

    name: str
    shape: Literal["text", "items", "table"]
    text: str = ""
    items: list[str] = field(default_factory=list)
    table: Table | None = None
    bad: bool = False  # a check that failed, a verdict that is "over", a failure


def shown(name: str, value: Any) -> str:
    """A scalar as people read it, its unit from its name."""
    return values.shown(value, name)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _table(value: list[Any]) -> Table:
    objects = [v for v in value if isinstance(v, Mapping)]
    columns = list(dict.fromkeys(k for v in objects for k in v))
    kept = objects[:MAX_ROWS]
    rows = [[shown(c, v.get(c)) if c in v else EM_DASH for c in columns] for v in kept]
    bad = [v.get("ok") is False or bool(v.get("error")) for v in kept]
    return Table(columns, rows, max(0, len(objects) - MAX_ROWS), bad)


def _failed(name: str, value: Any) -> bool:
    """What the report says went wrong: a `within_*` or `ok` that is false, failures."""
    if name in ("ok", "dropped") or name.startswith("within_"):
        return value is False
    return name in ("failures", "warnings") and bool(value)


def facts(data: Mapping[str, Any]) -> list[Fact]:
    """The data's fields in their order: scalars first, then lists and tables."""
    plain: list[Fact] = []
    nested: list[Fact] = []
    for name, value in data.items():
        bad = _failed(name, value)
        if _scalar(value):
            plain.append(Fact(name, "text", text=shown(name, value), bad=bad))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            nested.append(Fact(name, "table", table=_table(value), bad=bad))
        elif isinstance(value, list) and all(_scalar(v) for v in value):
            if value:  # an empty list (no warnings) says nothing
                items = [shown(name, v) for v in value[:MAX_ROWS]]
                nested.append(Fact(name, "items", items=items, bad=bad))
        elif isinstance(value, Mapping) and value and all(_scalar(v) for v in value.values()):
            rows = [[str(k), shown(str(k), v)] for k, v in list(value.items())[:MAX_ROWS]]
            table = Table(["name", "value"], rows, max(0, len(value) - MAX_ROWS))
            nested.append(Fact(name, "table", table=table, bad=bad))
        elif value:
            plain.append(Fact(name, "text", text=shown(name, value), bad=bad))
    return plain + nested
