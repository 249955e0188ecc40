"""No secret given to runbookd ever comes back out of it.

A real daemon process gets every kind of secret, given every way the config allows (a plain
value, `${ENV}`, `*_file`): a PagerDuty routing key, a Slack webhook URL, bearer tokens and an
API key header for http remediations, PostgreSQL and Redis URLs with passwords, S3 keys, API
tokens. It goes through incidents that use them against local receivers, one of which echoes
the request (and so the credential) back, the way careless servers do; a reload is refused
and `check-config` fails on bad values next to the secrets. Then everything runbookd emitted
is searched: its log lines, every API answer, /metrics, the files in its state directory, the
CLI's output. Not a secret, nor any 8 characters of one, may be found there.

If this test fails, a secret leaks: do not weaken it, fix the leak.
"""

from __future__ import annotations

import pytest

from tests.leaks import Secrets, find_leaks


def test_find_leaks_finds_a_secret_in_part_and_nothing_else() -> None:
    """The scanner itself: a partial secret is a leak; masked output is not."""
    values = {"key": "abcdefghijKLMNOPQRST"}
    outputs = {
        "log": b'{"event": "sent", "key": "***"}',
        "db": b"\x00\x01 ...ghijKLMNOP... \xff",
    }
    assert [(leak.secret, leak.where) for leak in find_leaks(values, outputs)] == [("key", "db")]


@pytest.fixture
def secret_values() -> Secrets:
    return Secrets()
