"""Text from the outside world shown to people: a check's message, a label, a reason typed
into the API. Controls and Unicode's direction overrides would hide or reorder what an
engineer reads, so they are shown as escapes (\\x1b, \\u202e); the rest of Unicode as it is."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the line separators and direction overrides of Unicode.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# The same, less newline and tab: a page keeps a report's lines and their indentation.
_CONTROLS_BUT_LINES = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: str) -> str:
    """`text` with every control escaped, newlines too: for a terminal's one line."""
    return _CONTROLS.sub(_escaped, text)


def visible(text: str) -> str:
    """`text` with every control escaped but newline and tab: for a page."""
    return _CONTROLS_BUT_LINES.sub(_escaped, text)
