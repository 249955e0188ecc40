"""The `runbookd` command: run, check-config, config reference, once, demo, completion;
incidents, silence, jobs, deploy, deploys and procedure talk to a running daemon over its HTTP
API (exit 0 ok, 1 the API said no, 2 usage or no daemon).

Each command imports what it runs when it runs: `run` has no use for the demo, and talking to
a daemon has none for the daemon itself. One parser and one short function per command, read
top to bottom; the work of each lives in the module it imports, what they print in output.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon import __version__
from daemon.cli import completion as completions
from daemon.cli import deploys as deploys_cli
from daemon.cli import procedures as procedures_cli
from daemon.cli.common import (
    Unexpected,
    action,
    api_token,
    connection_options,
    entries,
    shown,
    text,
)
from daemon.runtime.eventloop import run as run_on_loop
from daemon.runtime.logs import configure  # before any other module imports structlog: see there

if TYPE_CHECKING:  # the commands that talk to a daemon import the client when they run
    from daemon.cli.client import Answer, Client

DEFAULT_CONFIG = os.environ.get("RUNBOOKD_CONFIG", "/etc/runbookd/runbookd.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runbookd", description="Executes an operations runbook: watch, decide, act, verify."
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument(
        "--config", "-c", default=DEFAULT_CONFIG, help=f"config file (default: {DEFAULT_CONFIG})"
    )
    check = sub.add_parser("check-config", help="validate a config file; exit 2 if invalid")
    where = check.add_mutually_exclusive_group(required=True)
    where.add_argument("file", nargs="?", help="the config file (YAML)")
    where.add_argument(
        "--config", "-c", dest="config_file", help="the same, as `run` and `once` take it"
    )
    config = sub.add_parser("config", help="about the config file")
    config_actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    config_actions.add_parser("reference", help="print the configuration reference (Markdown)")
    once = sub.add_parser(
        "once",
        help="run the checks once and print a table; exit 0 if all are OK",
        epilog=ONCE_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    once.add_argument(
        "--config", "-c", default=DEFAULT_CONFIG, help=f"config file (default: {DEFAULT_CONFIG})"
    )
    once.add_argument("checks", nargs="*", metavar="CHECK", help="only these checks")
    demo = sub.add_parser("demo", help="a bad deploy, detected and rolled back, end to end")
    demo.add_argument(
        "scenario",
        nargs="?",
        choices=["deploy"],
        help="deploy: deploys announced by CI and watched; a good one completes, a bad one "
        "is rolled back against its pre-deploy baseline",
    )
    demo.add_argument("--config", "-c", default=None, help="demo config (default: bundled)")
    demo.add_argument(
        "--stay",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after the story, keep everything up for browsing the console until Ctrl-C "
        "(default: when run from a terminal)",
    )
    _incidents_parser(sub)
    _silence_parser(sub)
    _jobs_parser(sub)
    completion = sub.add_parser(
        "completion",
        help="print a shell completion script",
        epilog=completions.INSTALL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument("shell", choices=completions.SHELLS)
    deploys_cli.add_parsers(sub)
    procedures_cli.add_parsers(sub)
    return parser


ONCE_EXIT_CODES = """\
A check that needs an earlier sample (a scrape check's rates, a system check's
CPU use) runs again after a short pause (its interval, at most 5s).

exit codes:
  0  every check is OK
  1  a check is WARN or CRITICAL
  2  the config is invalid, or no such check
  3  none is bad, but a check could not measure (UNKNOWN)"""


class _Version(argparse.Action):
    """--version: the installed package's version, read only when asked (importing the
    metadata machinery costs every other command 40 ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("runbookd")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = __version__
        print(f"runbookd {found}")
        parser.exit()


# -- talking to a running daemon -----------------------------------------------------------------


def _who(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID")
    parser.add_argument("--by", required=True, help="who acts (kept on the timeline)")
    parser.add_argument("--reason", default="", help="why")


def _incidents_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("incidents", help="list, show, acknowledge, resolve incidents")
    connection_options(parser, defaults=True)
    parser.set_defaults(status=None, rule=None, limit=None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = action(actions, "list", "incidents, newest first (the default)")
    # Also before the action: `runbookd incidents --status open` lists, as `list` would.
    for where in (parser, listing):
        hidden = argparse.SUPPRESS  # the defaults above, unless given at either place
        where.add_argument("--status", choices=["open", "resolved"], default=hidden)
        where.add_argument("--rule", help="only this rule's incidents", default=hidden)
        where.add_argument(
            "--limit", type=int, help="at most this many (default 100)", default=hidden
        )
    action(actions, "show", "one incident with its timeline").add_argument("id", metavar="ID")
    _who(action(actions, "ack", "someone is on it: no more escalation"))
    _who(action(actions, "resolve", "close it; its rule starts afresh"))
    _who(action(actions, "approve", "approve the step waiting for approval"))
    _who(action(actions, "reject", "reject the step waiting for approval"))


def _jobs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("jobs", help="list scheduled jobs, show their runs, run one now")
    connection_options(parser, defaults=True)
    parser.set_defaults(limit=None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    action(actions, "list", "every job with its last run (the default)")
    show = action(actions, "show", "a job's runs, newest first")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--limit", type=int, help="at most this many (default 100)")
    action(actions, "run", "run a job now, whatever its schedule").add_argument(
        "name", metavar="NAME"
    )


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"not key=value: {text!r}")
    return key, value


def _duration(text: str) -> str:
    from daemon.core.units import parse_duration

    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _silence_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("silence", help="list, add, expire silences and maintenance windows")
    connection_options(parser, defaults=True)
    parser.set_defaults(expired=False)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = action(actions, "list", "silences that have not ended (the default)")
    listing.add_argument("--expired", action="store_true", help="also those that ended")
    add = action(actions, "add", "silence a rule, a check or labels for a while")
    add.add_argument("--rule", help="match incidents of this rule")
    add.add_argument("--check", help="match incidents of this check")
    add.add_argument(
        "--label", type=_label, action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    ends = add.add_mutually_exclusive_group(required=True)
    ends.add_argument("--duration", type=_duration, help="e.g. 2h, from the start")
    ends.add_argument("--ends-at", help="ISO 8601 with a zone (2026-11-28T03:00:00Z)")
    add.add_argument("--starts-at", help="later start: a maintenance window (default: now)")
    add.add_argument("--by", required=True, help="who silences")
    add.add_argument("--comment", required=True, help="why")
    action(actions, "expire", "end a silence now").add_argument("id", metavar="ID")


def _time(text: str | None) -> float | str | None:
    """Epoch seconds go as a number, anything else as the ISO text the API checks."""
    try:
        return float(text) if text is not None else None
    except ValueError:
        return text


def _silence_body(args: argparse.Namespace) -> dict[str, Any]:
    if not (args.rule or args.check or args.label):
        raise ValueError("silence add: give --rule, --check or --label (what to silence)")
    body: dict[str, Any] = {
        "created_by": args.by,
        "comment": args.comment,
        "rule": args.rule,
        "check": args.check,
        "labels": dict(args.label),
        "duration": args.duration,
        "ends_at": _time(args.ends_at),
        "starts_at": _time(args.starts_at),
    }
    return {k: v for k, v in body.items() if v is not None}


def cmd_api(args: argparse.Namespace) -> int:
    from daemon.cli.client import ApiError, Unreachable, base_url

    args.action = args.action or "list"
    try:
        token = api_token(args)
        base_url(args.url)
        body = _silence_body(args) if (args.command, args.action) == ("silence", "add") else None
        if (args.command, args.action) == ("procedure", "run"):
            procedures_cli.params(args.param)  # a malformed --param: exit 2, nothing sent
    except ValueError as exc:
        print(f"runbookd: {exc}", file=sys.stderr)
        return 2
    try:
        return run_on_loop(_call_api(args, token, body))
    except Unreachable as exc:
        print(f"runbookd: {shown(str(exc))}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"runbookd: {shown(str(exc))}", file=sys.stderr)
        return 1


async def _call_api(args: argparse.Namespace, token: str | None, body: Answer | None) -> int:
    from daemon.cli.client import ApiError, Client

    async with Client(args.url, token=token) as api:
        answer = await _perform(api, args, body)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    try:
        print(_render(args, answer, time.time()))
    except Unexpected as exc:
        raise ApiError(200, f"unexpected answer: {exc}") from None
    return 0


async def _perform(api: Client, args: argparse.Namespace, body: Answer | None) -> Answer:
    match args.command, args.action:
        case "incidents", "list":
            return await api.incidents(status=args.status, rule=args.rule, limit=args.limit)
        case "incidents", "show":
            return await api.incident(args.id)
        case "incidents", verb:
            act = {
                "ack": api.acknowledge,
                "resolve": api.resolve,
                "approve": api.approve,
                "reject": api.reject,
            }[verb]
            return await act(args.id, args.by, args.reason)
        case "jobs", "list":
            return await api.jobs()
        case "jobs", "show":
            return await api.job_runs(args.name, args.limit)
        case "jobs", "run":
            return await api.run_job(args.name)
        case "silence", "list":
            return await api.silences(expired=args.expired)
        case "silence", "add":
            assert body is not None
            return await api.create_silence(body)
        case command, _ if command in deploys_cli.COMMANDS:
            return await deploys_cli.perform(api, args)
        case command, _ if command in procedures_cli.COMMANDS:
            return await procedures_cli.perform(api, args)
        case _:
            return await api.expire_silence(args.id)


DONE = {"ack": "acknowledged", "resolve": "resolved", "approve": "approved", "reject": "rejected"}


def _render(args: argparse.Namespace, answer: Answer, now: float) -> str:
    from daemon.cli.output import (
        incident_detail,
        incident_table,
        job_table,
        run_table,
        silence_created,
        silence_table,
    )

    match args.command, args.action:
        case "incidents", "list":
            return incident_table(entries(answer, "incidents"))
        case "incidents", "show":
            return incident_detail(answer)
        case "incidents", verb:
            return f"{DONE[verb]} {shown(args.id)} (by {shown(args.by)})"
        case "jobs", "list":
            return job_table(entries(answer, "jobs"))
        case "jobs", "show":
            return run_table(entries(answer, "runs"))
        case "jobs", "run":
            return f"started {shown(args.name)}: `runbookd jobs show {shown(args.name)}` follows it"
        case "silence", "list":
            return silence_table(entries(answer, "silences"), now)
        case "silence", "add":
            return silence_created(answer, now)
        case command, _ if command in deploys_cli.COMMANDS:
            return deploys_cli.render(args, answer)
        case command, _ if command in procedures_cli.COMMANDS:
            return procedures_cli.render(args, answer)
        case _:
            return f"expired {text(answer, 'id')}"


def cmdrun_on_loop(config_file: str) -> int:
    """The daemon; its exit codes are daemon.app.ExitCode's."""
    # Starting builds objects that live as long as the daemon (modules, models, a thousand
    # checks): the cyclic GC would walk them over and over, 100 ms and more with 1,000
    # checks. Daemon.serve turns it back on once started.
    gc.disable()
    from daemon.config.loader import load_config
    from daemon.config.problems import ConfigError
    from daemon.runtime.daemon import Daemon, ExitCode, StartFailed
    from daemon.store.sqlite.lock import StateDirInUse

    path = Path(config_file)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return ExitCode.CONFIG_INVALID
    configure(config.runbookd.log_level)
    try:
        return run_on_loop(Daemon(config, config_path=path).serve())
    except StartFailed as exc:
        print(f"runbookd: could not start: {exc}", file=sys.stderr)
        return ExitCode.START_FAILED
    except StateDirInUse as exc:
        print(f"runbookd: could not start: {exc}", file=sys.stderr)
        return ExitCode.STATE_DIR_IN_USE


def cmd_once(config_file: str, names: Sequence[str]) -> int:
    from daemon.cli.once import run_once
    from daemon.config.loader import load_config
    from daemon.config.problems import ConfigError

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
    return run_on_loop(run_once(config, names))


def cmd_demo(config_file: str | None, scenario: str | None, stay: bool | None) -> int:
    configure("warning", stream=sys.stderr, human=True)  # amid the story, not JSON
    from daemon.cli.demo.run import DEFAULT_CONFIG, run_demo, until_interrupted

    # From a terminal, someone may open the console it printed: it stays up until Ctrl-C.
    keep = until_interrupted if (sys.stdout.isatty() if stay is None else stay) else None
    if scenario == "deploy":
        from daemon.cli.demo.deploy import DEPLOY_CONFIG, run_deploy_demo

        path = Path(config_file) if config_file else DEPLOY_CONFIG
        return run_on_loop(run_deploy_demo(path, stay=keep))
    path = Path(config_file) if config_file else DEFAULT_CONFIG
    return run_on_loop(run_demo(path, stay=keep))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        from daemon.config.check import check_config_main

        return check_config_main(args.file or args.config_file)
    if args.command == "config":  # its one action: reference
        from daemon.config.reference import reference

        sys.stdout.write(reference())
        return 0
    if args.command == "run":
        return cmdrun_on_loop(args.config)
    if args.command == "once":
        return cmd_once(args.config, args.checks)
    talking = ("incidents", "silence", "jobs", *deploys_cli.COMMANDS, *procedures_cli.COMMANDS)
    if args.command in talking:
        return cmd_api(args)
    if args.command == "completion":
        print(completions.script(_parser(), args.shell), end="")
        return 0
    return cmd_demo(args.config, args.scenario, args.stay)


if __name__ == "__main__":
    sys.exit(main())
