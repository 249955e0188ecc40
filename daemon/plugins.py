"""The built-in check and remediation types, imported explicitly so they register."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

BUILTIN_MODULES = (
    "checks.http",
    "checks.nagios",
    "checks.postgres",
    "checks.prometheus",
    "checks.redis",
    "checks.s3_backup",
    "checks.scrape",
    "checks.system",
    "checks.tls",
    "remediations.http",
    "remediations.command",
    "remediations.compose",
    "remediations.pagerduty",
    "remediations.postgres_maintenance",
    "remediations.redis_flush",
    "remediations.service",
    "remediations.slack",
    "remediations.vercel",
    "remediations.vercel_env",
)

_loaded = False


def load() -> None:
    """Import built-ins, then third-party plugins (entry point group `runbookd.plugins`)."""
    global _loaded
    if _loaded:
        return
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for entry in entry_points(group="runbookd.plugins"):
        entry.load()
    _loaded = True
