"""The `runbookd` command: run, check-config, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from daemon import __version__
from daemon.app import Daemon
from daemon.config import ConfigError, check_config_main, load_config
from daemon.demo import DEFAULT_CONFIG as DEMO_CONFIG
from daemon.demo import run_demo
from daemon.logs import configure
from daemon.once import run_once

T = TypeVar("T")

DEFAULT_CONFIG = os.environ.get("RUNBOOKD_CONFIG", "/etc/runbookd/runbookd.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runbookd", description="Executes an operations runbook: watch, decide, act, verify."
    )
    parser.add_argument("--version", action="version", version=f"runbookd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="config file (YAML)")
    check = sub.add_parser("check-config", help="validate a config file; exit 2 if invalid")
    check.add_argument("file")
    once = sub.add_parser("once", help="run the checks once and print a table; exit 1 unless OK")
    once.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="config file (YAML)")
    once.add_argument("checks", nargs="*", metavar="CHECK", help="only these checks")
    demo = sub.add_parser("demo", help="a bad deploy, detected and rolled back, end to end")
    demo.add_argument("--config", "-c", default=None, help="demo config (default: bundled)")
    return parser


def _run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when it is installed (an optional speed-up)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def cmd_run(config_file: str) -> int:
    path = Path(config_file)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure(config.runbookd.log_level)
    _run(Daemon(config, config_path=path).serve())
    return 0


def cmd_once(config_file: str, names: Sequence[str]) -> int:
    try:
        config = load_config(config_file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if unknown := [n for n in names if n not in config.checks]:
        defined = ", ".join(config.checks) or "none"
        print(f"no such check: {', '.join(unknown)} (defined: {defined})", file=sys.stderr)
        return 2
    configure("warning", stream=sys.stderr)
    return _run(run_once(config, names))


def cmd_demo(config_file: str | None) -> int:
    configure("warning", stream=sys.stderr)
    return _run(run_demo(Path(config_file) if config_file else DEMO_CONFIG))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config_main(args.file)
    if args.command == "run":
        return cmd_run(args.config)
    if args.command == "once":
        return cmd_once(args.config, args.checks)
    return cmd_demo(args.config)


if __name__ == "__main__":
    sys.exit(main())
