"""`daemon.core.redaction.excerpt`, the one way a provider's answer or an error text is cut for
the timeline or a reason: masked first, then cut, and nothing of a credential survives the
cut, wherever the cut falls."""

from __future__ import annotations

import pytest

from daemon.core.redaction import excerpt

KEY = "R0ut1ngKey0123456789abcdefABCDEF"


def starts_of(secret: str, text: str, shortest: int = 4) -> list[str]:
    return [secret[:n] for n in range(shortest, len(secret) + 1) if secret[:n] in text]


@pytest.mark.parametrize("whole", [True, False])
def test_no_start_of_a_secret_survives_a_cut_anywhere(whole: bool) -> None:
    text = f'{{"message": "unknown key {KEY}", "hint": "check the key"}}'
    for limit in range(len(text) + 2):
        # whole=False: the text is the start of a longer answer (read up to a bound).
        given = text if whole else text[:limit]
        shown = excerpt(given, limit, [KEY], whole=whole)
        assert len(shown) <= max(limit, 1)  # the marker alone, at limit 0
        assert starts_of(KEY, shown) == [], (limit, shown)


@pytest.mark.parametrize(
    ("text", "whole", "expected"),
    [
        (
            "see https://ops:hunter2pass@db.example/x and more",
            True,
            "see https://ops:***@db.exampl…",
        ),
        ("dsn host=db password='s3cret value' port=5432", True, "dsn host=db password=*** port…"),
        (f"key {KEY} echoed", True, "key *** echoed"),
        ("nothing secret but long, longer than the limit", True, "nothing secret but long, long…"),
        # The start of a longer text: what it leaves open at its end is masked.
        ("see https://ops:hunter2pa", False, "see https://ops:***…"),
        ("dsn host=db password='s3cret va", False, "dsn host=db password='***…"),
        ("dsn host=db password=s3cret", False, "dsn host=db password=***…"),
        (f"key {KEY[:9]}", False, "key ***…"),
    ],
)
def test_credentials_are_masked_before_the_cut(text: str, whole: bool, expected: str) -> None:
    assert excerpt(text, 30, [KEY], whole=whole) == expected
