"""What the commands that talk to a running daemon share: the connection options, the token,
and printing what the daemon says so that no text can move the cursor, retitle the terminal
or start a row of its own (a field that is missing prints "?", one of the wrong type or out
of range too)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from daemon.core.text import one_line

# Here rather than in client.py: every command's parser names it, and `runbookd run` builds
# them all without talking to a daemon.
DEFAULT_URL = "http://127.0.0.1:9464"


def connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--url, --token, --json. Given to a command and to each of its actions, so they may come
    before or after the action; an action's SUPPRESS defaults never undo the command's."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    url = os.environ.get("RUNBOOKD_URL", DEFAULT_URL)
    parser.add_argument(
        "--url", default=default(url), help=f"the daemon (default: $RUNBOOKD_URL or {url})"
    )
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token", default=default(None), help="API token (default: $RUNBOOKD_TOKEN)"
    )
    tokens.add_argument("--token-file", default=default(None), help="read the API token here")
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print the raw JSON answer"
    )


def action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=summary)
    connection_options(parser, defaults=False)
    return parser


def api_token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"cannot read {args.token_file}: {exc.strerror}") from None
        if not token:
            raise ValueError(f"{args.token_file} is empty")
        return token
    return args.token or os.environ.get("RUNBOOKD_TOKEN") or None


# -- output for people ------------------------------------------------------------------------


class Unexpected(Exception):
    """The answer lacks what a command prints; the message says what."""


MISSING = object()


def shown(value: object) -> str:
    """`value` as one line of printable text: strings as they are, controls escaped."""
    try:
        line = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # too deep, or an int too long to write
        return "?"
    return one_line(line)


def field(doc: object, key: str) -> object:
    """`doc[key]`, or MISSING when `doc` is not an object or lacks it."""
    return doc.get(key, MISSING) if isinstance(doc, dict) else MISSING


def text(doc: object, key: str) -> str:
    """A field to print: "?" if missing, "-" if null."""
    value = field(doc, key)
    return "?" if value is MISSING else "-" if value is None else shown(value)


def entries(doc: object, key: str) -> list[object]:
    found = field(doc, key)
    if not isinstance(found, list):
        raise Unexpected(f"no list {key!r} in it")
    return found


def instant(ts: object) -> datetime | None:
    """Epoch seconds as a UTC time; None for what is not one a calendar holds."""
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):  # NaN, or beyond the years datetime knows
        return None


def when(ts: object) -> str:
    """An epoch time as ISO 8601 UTC; "-" for null, "?" for what is not a printable time."""
    if ts is None:
        return "-"
    moment = instant(ts)
    if moment is None:
        return "?"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last one runs free."""
    widths = [max(len(c) for c in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [headers, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)
