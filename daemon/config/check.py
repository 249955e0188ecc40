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
    counts = (
        f"{len(config.checks)} checks, {len(config.rules)} rules, "
        f"{len(config.remediations)} remediations"
    )
    if config.jobs:
        counts += f", {len(config.jobs)} jobs"
    print(f"{path}: ok ({counts})")
    return 0
