"""runbookd: executes an operations runbook — watch, decide, act, verify, record."""

__version__ = "0.1.0"
