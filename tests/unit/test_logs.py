"""The log set-up: JSON lines for machines off a TTY, lines for people when asked (the demo)."""

from __future__ import annotations

import io
import json

import structlog

from daemon.runtime.logs import configure


def logged(**options: bool) -> str:
    saved = structlog.get_config()
    out = io.StringIO()
    configure("warning", stream=out, **options)
    try:
        structlog.get_logger().warning("check status", check="error_rate", new="unknown")
        structlog.get_logger().info("not at this level")
    finally:
        structlog.configure(**saved)
    return out.getvalue()


def test_off_a_tty_the_log_is_json_lines() -> None:
    (line,) = logged().splitlines()
    assert json.loads(line)["event"] == "check status"


def test_for_people_the_log_is_plain_lines_without_colour_codes_off_a_tty() -> None:
    (line,) = logged(human=True).splitlines()
    assert not line.startswith("{")
    assert "check status" in line
    assert "check=error_rate" in line
    assert "\x1b[" not in line
