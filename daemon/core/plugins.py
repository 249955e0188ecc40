"""The built-in check and remediation types, imported explicitly so they register.

A config imports only the modules of the types it names: each built-in module pulls in its
own models and helpers, and a daemon watching HTTP endpoints has no use for the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from importlib.metadata import entry_points

# `type:` key -> the module that registers it. tests/unit/test_config.py holds these to what the
# modules register.
BUILTIN_CHECKS = {
    "http": "checks.http",
    "nagios": "checks.nagios",
    "postgres": "checks.postgres",
    "prometheus": "checks.prometheus",
    "redis": "checks.redis",
    "s3_backup": "checks.s3_backup",
    "scrape": "checks.scrape",
    "system": "checks.system",
    "tls": "checks.tls",
}
BUILTIN_REMEDIATIONS = {
    "http": "remediations.http",
    "command": "remediations.command",
    "compose_rollback": "remediations.compose",
    "compose_scale": "remediations.compose",
    "pagerduty": "remediations.pagerduty",
    "pagerduty_change": "remediations.pagerduty",
    "pg_backup": "remediations.pg_backup",
    "pg_restore": "remediations.pg_restore",
    "postgres_maintenance": "remediations.postgres_maintenance",
    "redis_flush": "remediations.redis_flush",
    "restore_drill": "remediations.restore_drill",
    "s3_prune": "remediations.s3_prune",
    "systemd_restart": "remediations.service",
    "pm2_restart": "remediations.service",
    "slack": "remediations.slack",
    "vercel_rollback": "remediations.vercel",
    "vercel_promote": "remediations.vercel",
    "vercel_env": "remediations.vercel_env",
    "vercel_secret": "remediations.vercel_secret",
}
BUILTIN_MODULES = tuple(dict.fromkeys([*BUILTIN_CHECKS.values(), *BUILTIN_REMEDIATIONS.values()]))

_loaded = False


def load() -> None:
    """Import built-ins, then third-party plugins (entry point group `runbookd.plugins`)."""
    global _loaded
    if _loaded:
        return
    for module in BUILTIN_MODULES:
        import_module(module)
    for entry in entry_points(group="runbookd.plugins"):
        entry.load()
    _loaded = True


def load_types(checks: Iterable[object], remediations: Iterable[object]) -> None:
    """Import the modules of these built-in types; a name that is not one (a plugin's type,
    a typo) loads everything, so it resolves or its error lists every known type."""
    if _loaded:
        return
    modules: list[str] = []
    for names, builtin in ((checks, BUILTIN_CHECKS), (remediations, BUILTIN_REMEDIATIONS)):
        for name in names:
            module = builtin.get(name) if isinstance(name, str) else None
            if module is None:
                load()
                return
            modules.append(module)
    for module in dict.fromkeys(modules):
        import_module(module)
