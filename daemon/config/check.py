"""`runbookd check-config FILE`: validate a config without starting anything."""

from __future__ import annotations

import sys

from daemon.config.loader import load_config
from daemon.config.problems import ConfigError


def check_config_main(path: str) -> int:
    """`runbookd check-config FILE`: 0 and a summary line when valid, else 2 and the problems."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    sizes = {"check": len(config.checks), "rule": len(config.rules)}
    sizes |= {"remediation": len(config.remediations), "job": len(config.jobs)}
    counts = ", ".join(counted(n, noun) for noun, n in sizes.items() if n or noun != "job")
    print(f"{path}: ok ({counts})")
    return 0


def counted(n: int, noun: str) -> str:
    """1 check, 2 checks."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
