"""Transactions on the store's connection, run on its thread (daemon/store/sqlite/executor.py).

What the event loop sends is a unit: the statements of one call, or of one batch, as a list of
ops. A unit runs inside a savepoint, so one that fails is rolled back alone while the others in
the same transaction are committed (`commit_together`, the group commit).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
# What a call runs on the connection's thread.
Op = Callable[[sqlite3.Connection], T]
Outcome = tuple[Exception | None, Any]  # (the error, or None and the result)

ROLLED_BACK = "the batch's transaction was rolled back; nothing of it is written"


def run_unit(conn: sqlite3.Connection, ops: Sequence[Op[Any]]) -> Any:
    """Run `ops` inside the open transaction as one: all of them, or none and the error raised.
    Returns what the last one returned."""
    conn.execute("SAVEPOINT unit")
    try:
        result = None
        for op in ops:
            result = op(conn)
    except BaseException:
        if conn.in_transaction:  # else SQLite rolled the whole transaction back (e.g. disk full)
            conn.execute("ROLLBACK TO unit")
            conn.execute("RELEASE unit")
        raise
    conn.execute("RELEASE unit")
    return result


def commit_together(
    conn: sqlite3.Connection, units: Sequence[Sequence[Op[Any]]]
) -> tuple[list[Outcome], int]:
    """Each unit's ops in one transaction, a savepoint per unit: a unit that fails is rolled
    back alone and gets its error, the others are committed together. Returns each unit's
    outcome and how many transactions were committed."""
    outcomes: list[Outcome] = [(None, None)] * len(units)
    commits = 0
    todo = list(range(len(units)))
    while todo:
        applied: list[int] = []
        again: list[int] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for n, i in enumerate(todo):
                try:
                    outcomes[i] = (None, run_unit(conn, units[i]))
                except Exception as exc:
                    outcomes[i] = (exc, None)
                    if not conn.in_transaction:
                        # SQLite rolled the transaction back: the units applied before this
                        # one go again in a new one, without it.
                        again, applied = applied + todo[n + 1 :], []
                        break
                else:
                    applied.append(i)
            if applied:
                conn.execute("COMMIT")
                commits += 1
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        except Exception as exc:
            # BEGIN or COMMIT failed: nothing of this transaction is written.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for i in todo:
                if outcomes[i][0] is None:
                    outcomes[i] = (exc, None)
            again = []
        todo = again
    return outcomes, commits


def begin(ops: Sequence[Op[Any]], conn: sqlite3.Connection) -> None:
    """Open a batch's own transaction, with its writes so far."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        run_unit(conn, ops)
    except BaseException:
        # All or nothing, even if the block goes on after catching this: the rest of the
        # batch then fails too, its transaction being gone.
        rollback(conn)
        raise


def in_open_transaction(op: Op[T], conn: sqlite3.Connection) -> T:
    """One more write (or read) in a batch's own transaction."""
    # Were it gone, the statement would run (and commit) on its own, outside the batch.
    if not conn.in_transaction:
        raise sqlite3.OperationalError(ROLLED_BACK)
    result: T = run_unit(conn, [op])
    return result


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def commit(conn: sqlite3.Connection) -> None:
    """Commit a batch's own transaction, or roll it back if that fails."""
    if not conn.in_transaction:
        raise sqlite3.OperationalError(ROLLED_BACK)
    try:
        conn.execute("COMMIT")
    except Exception:
        rollback(conn)
        raise
