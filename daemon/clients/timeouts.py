"""How long a check's client may wait: a little under the check's own timeout."""

from __future__ import annotations


def request_timeout(check_timeout: float) -> float:
    """Give up a little before the scheduler cancels the run, so a timeout is reported by us."""
    return max(check_timeout - min(0.5, check_timeout * 0.1), 0.001)
