"""How the console reads a record's data (daemon/ui/facts.py): units from names, unknown as
an em dash, lists and tables, bounds."""

from __future__ import annotations

from daemon.core import values
from daemon.ui import facts
from daemon.ui.facts import Fact, Table


def test_units_come_from_names_and_none_is_a_dash_never_zero() -> None:
    shown = {
        f.name: f.text
        for f in facts.facts(
            {
                "bytes": 52_428_800,
                "restored_bytes": None,
                "duration_seconds": 0.25,
                "time_to_recover_seconds": 3725.0,
                "started_at": 0.0,
                "failing_since": 60.0,
                "ok": True,
                "exit_code": 0,
                "error": None,
                "ratio": 0.123456,
            }
        )
    }
    assert shown == {
        "bytes": "50.0 MiB",
        "restored_bytes": "—",
        "duration_seconds": "250ms",
        "time_to_recover_seconds": "1h2m5s",
        "started_at": "1970-01-01 00:00:00 UTC",
        "failing_since": "1970-01-01 00:01:00 UTC",
        "ok": "yes",
        "exit_code": "0",
        "error": "—",
        "ratio": "12.35%",
    }


def test_lists_and_objects_become_items_and_tables_after_the_scalars() -> None:
    got = facts.facts(
        {
            "row_counts": [
                {"table": "users", "expected": 3, "restored": 3, "ok": True, "error": None},
                {"table": "tasks", "expected": 9, "restored": None, "ok": False, "error": "gone"},
            ],
            "warnings": ["versioning off"],
            "failures": [],
            "counted": {"users": 3, "tasks": 9},
            "key": "db/1.dump",
            "within_rpo": False,
        }
    )
    assert [f.name for f in got] == ["key", "within_rpo", "row_counts", "warnings", "counted"]
    assert got[1] == Fact("within_rpo", "text", text="no", bad=True)
    assert got[2].table == Table(
        ["table", "expected", "restored", "ok", "error"],
        [["users", "3", "3", "yes", "—"], ["tasks", "9", "—", "no", "gone"]],
        0,
        [False, True],
    )
    assert got[3] == Fact("warnings", "items", items=["versioning off"], bad=True)
    assert got[4].table == Table(["name", "value"], [["users", "3"], ["tasks", "9"]])


def test_long_text_and_long_tables_are_cut_and_say_so() -> None:
    got = facts.facts(
        {
            "stdout": "x" * 1000,
            "nested": {"deep": {"er": [1, 2]}},
            "rows": [{"n": i} for i in range(facts.MAX_ROWS + 7)],
        }
    )
    assert got[0].text == "x" * values.MAX_TEXT + "…"
    assert got[1].text == "deep: {er: [1, 2]}"  # past what a table shows: pairs
    table = got[2].table
    assert table is not None
    assert (len(table.rows), table.more) == (facts.MAX_ROWS, 7)
