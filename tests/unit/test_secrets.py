"""The leak search the secret tests rely on (tests/leaks.py) finds a secret, in part, and
nothing else."""

from __future__ import annotations

from tests.leaks import find_leaks


def test_find_leaks_finds_a_secret_in_part_and_nothing_else() -> None:
    """The scanner itself: a partial secret is a leak; masked output is not."""
    values = {"key": "abcdefghijKLMNOPQRST"}
    outputs = {
        "log": b'{"event": "sent", "key": "***"}',
        "db": b"\x00\x01 ...ghijKLMNOP... \xff",
    }
    assert [(leak.secret, leak.where) for leak in find_leaks(values, outputs)] == [("key", "db")]
