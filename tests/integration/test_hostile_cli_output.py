"""`runbookd incidents` and `runbookd silence` against a fake daemon that answers hostile
JSON: text that would drive the terminal (ESC sequences, OSC titles, CR and LF forging rows,
C1 controls, direction overrides), times no calendar holds, fields missing or of the wrong
type, answers too deep or too large. The command prints escaped text and "?" where a value
cannot be shown, exits 0 or 1 with one line, and never prints a traceback."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

import daemon.cli.client
from daemon.cli.main import main
from tests.utils import serve

# What a terminal acts on; the output's own newlines end its lines and are checked apart.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
HOSTILE = [
    "\x1b[2J\x1b[Hscreen cleared",
    "\x1b]0;owned\x07retitled",
    "ok\rinc-forged  open  down  critical  2026-01-01T00:00:00Z  carriage return",
    "ok\ninc-forged  open  down  critical  2026-01-01T00:00:00Z  line feed",
    "\x9b31mC1 CSI\x9d0;title\x9c",
    "\x7fdel\x00nul",
    "\u202eexe.txt\u2028next",
]


class FakeDaemon:
    """Answers every /api/v1 request with `body` (raw bytes) and `status`."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b"{}"
        self.app = web.Application()
        self.app.router.add_route("*", "/api/v1/{tail:.*}", self._answer)

    def answer(self, doc: Any, status: int = 200) -> None:
        # allow_nan: Python's json writes NaN and Infinity, as a hostile server may.
        self.status, self.body = status, json.dumps(doc).encode()

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=self.status, body=self.body, content_type="application/json")


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeDaemon, str]]:
    server = FakeDaemon()
    async with serve(server.app) as url:
        yield server, url


async def runbookd(url: str, *argv: str) -> int:
    return await asyncio.to_thread(main, [*argv, "--url", url])


def printed(capsys: pytest.CaptureFixture[str]) -> tuple[list[str], str]:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert not CONTROL.search(out), repr(out)
    assert not CONTROL.search(err.rstrip("\n")), repr(err)
    return out.splitlines(), err


def incident(number: int, summary: str) -> dict[str, Any]:
    return {
        "id": f"inc-{number}",
        "status": "open",
        "rule": "down",
        "severity": "critical",
        "opened_at": 1767225600,
        "summary": summary,
    }


async def test_summaries_cannot_drive_the_terminal_or_forge_rows(
    fake: tuple[FakeDaemon, str], capsys: pytest.CaptureFixture[str]
) -> None:
    server, url = fake
    server.answer({"incidents": [incident(n, s) for n, s in enumerate(HOSTILE)]})

    assert await runbookd(url, "incidents") == 0

    lines, _ = printed(capsys)
    assert len(lines) == 1 + len(HOSTILE)
    assert [line.split()[0] for line in lines] == ["ID"] + [f"inc-{n}" for n in range(7)]
    assert lines[1].endswith(r"\x1b[2J\x1b[Hscreen cleared")
    assert lines[2].endswith(r"\x1b]0;owned\x07retitled")
    assert r"ok\x0dinc-forged" in lines[3]
    assert r"ok\x0ainc-forged" in lines[4]
    assert lines[5].endswith(r"\x9b31mC1 CSI\x9d0;title\x9c")
    assert lines[6].endswith(r"\x7fdel\x00nul")
    assert lines[7].endswith(r"\u202eexe.txt\u2028next")


async def test_a_timeline_and_trigger_cannot_drive_the_terminal(
    fake: tuple[FakeDaemon, str], capsys: pytest.CaptureFixture[str]
) -> None:
    server, url = fake
    timeline = [
        {"ts": 1767225600 + n, "kind": "note\x1b[1A", "message": s} for n, s in enumerate(HOSTILE)
    ]
    server.answer(
        incident(1, "\x1b]0;t\x07")
        | {
            "check": "api\r",
            "resolved_at": None,
            "trigger": {"value\x1b[2J": "\x1b[31m1", "labels": {"a": "\n"}},
            "timeline": timeline,
        }
    )

    assert await runbookd(url, "incidents", "show", "inc-1") == 0

    lines, _ = printed(capsys)
    assert lines[:6] == [
        "inc-1  open  critical",
        r"rule:     down (check api\x0d)",
        r"summary:  \x1b]0;t\x07",
        "opened:   2026-01-01T00:00:00Z",
        "resolved: -",
        r'trigger:  value\x1b[2J=\x1b[31m1 labels={"a": "\n"}',
    ]
    assert len(lines) == 6 + 1 + 1 + len(HOSTILE)  # a blank line, the header, one per step
    assert all(line.startswith("2026-01-01T00:00:0") for line in lines[8:])


# Silences that once crashed `silence list` (OverflowError) or would.
ODD_SILENCES: list[Any] = [
    {"id": "far", "active": False, "starts_at": 1e19, "ends_at": 1e19 + 1},
    {"id": "neg", "active": False, "starts_at": -1e19, "ends_at": -1e19},
    {"id": "nan", "active": False, "starts_at": float("nan"), "ends_at": float("inf")},
    {"id": "text", "active": "yes", "starts_at": "soon", "ends_at": True},
    {"id": "bigint", "active": True, "starts_at": 10**30, "ends_at": None, "labels": ["x"]},
    {"comment": "every other field missing"},
    "not an object",
    None,
]


async def test_silences_with_times_no_calendar_holds_print_question_marks(
    fake: tuple[FakeDaemon, str], capsys: pytest.CaptureFixture[str]
) -> None:
    server, url = fake
    server.answer({"silences": ODD_SILENCES})

    assert await runbookd(url, "silence", "list") == 0

    lines, err = printed(capsys)
    assert err == ""
    assert lines == [
        "ID      STATE   STARTS  ENDS  MATCHERS  BY  COMMENT",
        "far     ?       ?       ?               ?   ?",
        "neg     ?       ?       ?               ?   ?",
        "nan     ?       ?       ?               ?   ?",
        "text    ?       ?       ?               ?   ?",
        "bigint  active  ?       -               ?   ?",
        "?       ?       ?       ?               ?   every other field missing",
        "?       ?       ?       ?               ?   ?",
        "?       ?       ?       ?               ?   ?",
    ]


async def test_a_created_silence_with_an_odd_answer_prints_question_marks(
    fake: tuple[FakeDaemon, str], capsys: pytest.CaptureFixture[str]
) -> None:
    server, url = fake
    server.answer({"id": "sil-\x1b[2J", "active": False, "starts_at": 1e19, "ends_at": 1e300})
    argv = ["silence", "add", "--rule", "down", "--duration", "1h", "--by", "a", "--comment", "c"]

    assert await runbookd(url, *argv) == 0

    lines, _ = printed(capsys)
    assert lines == [r"created sil-\x1b[2J: ? until ?"]


@pytest.mark.parametrize(
    ("argv", "body", "status", "message"),
    [
        (["incidents"], b"[1, 2]", 200, "the answer is not a JSON object (is that a runbookd?)"),
        (
            ["incidents"],
            b'{"incidents": "none"}',
            200,
            "unexpected answer: no list 'incidents' in it",
        ),
        (["silence"], b'{"silences": {}}', 200, "unexpected answer: no list 'silences' in it"),
        (
            ["incidents"],
            b"[" * 100_000,
            200,
            "the answer is not a JSON object (is that a runbookd?)",
        ),
        (
            ["incidents"],
            b'{"error": "\\u001b[2Jgone\\r\\nforged"}',
            400,
            r"\x1b[2Jgone\x0d\x0aforged",
        ),
        (["incidents"], b"\x1b]0;owned\x07 proxy page", 502, r"\x1b]0;owned\x07 proxy page"),
        (["incidents", "show", "x"], b"\xff\xfe not utf-8", 200, "the answer is not a JSON object"),
    ],
)
async def test_an_answer_that_is_not_runbookds_exits_1_with_one_line(
    fake: tuple[FakeDaemon, str],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    body: bytes,
    status: int,
    message: str,
) -> None:
    server, url = fake
    server.status, server.body = status, body

    assert await runbookd(url, *argv) == 1

    lines, err = printed(capsys)
    assert lines == []
    assert err.startswith(f"runbookd: HTTP {status}: ")
    assert message in err
    assert err.count("\n") == 1


async def test_an_answer_larger_than_the_bound_is_not_read_whole(
    fake: tuple[FakeDaemon, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, url = fake
    monkeypatch.setattr(daemon.cli.client, "MAX_ANSWER", 1 << 20)
    server.answer({"incidents": [], "padding": "x" * (3 << 20)})

    assert await runbookd(url, "incidents") == 1

    _, err = printed(capsys)
    assert err == "runbookd: HTTP 200: answer larger than 1 MiB\n"
