"""Which checks a listing shows, and in what order: `GET /api/v1/checks`'s query and the
console's paging. With thousands of checks, a page shows trouble first and a slice of the rest,
and only that slice is built into answers; the counts by status still cover every check.

The query travels as an act's arguments (a standby forwards it as JSON), so it is parsed from
strings (a query string) or JSON values alike, and a bad one is refused with its field named."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

# "none": the check has not run yet (or this replica runs no checks: a standby).
STATUSES = ("critical", "warn", "unknown", "none", "ok")
# Trouble first: the order of STATUSES.
TROUBLE_RANK = {status: rank for rank, status in enumerate(STATUSES)}
ORDERS = ("name", "trouble")
MAX_MATCH = 200


@dataclass(frozen=True, slots=True)
class CheckQuery:
    status: str | None = None  # only checks in it
    match: str = ""  # only checks whose name contains it
    order: str = "name"
    offset: int = 0
    limit: int | None = None  # None: every check
    history: bool = False  # with each check's recent values (the console's plot)

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> CheckQuery:
        """The query from an act's arguments; ValueError names the field that is wrong."""
        status = args.get("status")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status: must be one of {', '.join(STATUSES)}")
        order = args.get("order", "name")
        if order not in ORDERS:
            raise ValueError(f"order: must be one of {', '.join(ORDERS)}")
        match = args.get("match", "")
        if not isinstance(match, str) or len(match) > MAX_MATCH:
            raise ValueError(f"match: a string of at most {MAX_MATCH} characters")
        limit = args.get("limit")
        return cls(
            status=status,
            match=match,
            order=order,
            offset=_count("offset", args.get("offset", 0), 0),
            limit=None if limit is None else _count("limit", limit, 1),
            history=_flag("history", args.get("history", False)),
        )

    def to_args(self) -> dict[str, Any]:
        return asdict(self)


def _count(field: str, value: object, least: int) -> int:
    try:
        number = (
            int(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
        )
    except ValueError:
        number = None
    if number is None or number < least:
        raise ValueError(f"{field}: an integer of at least {least}")
    return number


def _flag(field: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{field}: true or false")
