"""`runbookd procedure` (list the procedures, start a run, follow it, approve or reject its
waiting step, cancel it) over the daemon's HTTP API."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from daemon.cli.common import action, connection_options, entries, field, table, text, when
from daemon.procedures.models import RunStatus

if TYPE_CHECKING:  # `runbookd run` builds this parser, and needs no client
    from daemon.cli.client import Answer, Client

COMMANDS = ("procedure",)
FOLLOW_POLL = 1.0  # how often `run --follow` asks for the run


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("procedure", help="list procedures, run one, follow, approve, cancel")
    connection_options(parser, defaults=True)
    parser.set_defaults(procedure=None, status=None, limit=None, follow=False)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    action(actions, "list", "the procedures configured (the default)")
    run = action(actions, "run", "start a run: its steps run in order on the daemon")
    run.add_argument("name", metavar="NAME")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of the procedure (repeat for each)",
    )
    run.add_argument("--by", required=True, help="who runs it (kept on the run's timeline)")
    run.add_argument("--follow", action="store_true", help="print its steps until it ends")
    runs = action(actions, "runs", "runs, newest first")
    runs.add_argument("--procedure", help="only runs of this procedure")
    runs.add_argument("--status", choices=[s.value for s in RunStatus])
    runs.add_argument("--limit", type=int, help="at most this many (default 100)")
    show = action(actions, "show", "one run with its steps and timeline")
    show.add_argument("id", metavar="RUN")
    show.add_argument("--follow", action="store_true", help="print its steps until it ends")
    for verb, summary in (
        ("approve", "approve the step the run waits on"),
        ("reject", "reject the step the run waits on: the run fails and undoes"),
        ("cancel", "stop the run and undo what it did"),
    ):
        decided = action(actions, verb, summary)
        decided.add_argument("id", metavar="RUN")
        decided.add_argument("--by", required=True, help="who acts (kept on the timeline)")
        decided.add_argument("--reason", default="", help="why")


def params(given: list[str]) -> dict[str, str]:
    """`--param NAME=VALUE` pairs; ValueError naming one without `=`."""
    found: dict[str, str] = {}
    for pair in given:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {pair!r}: give NAME=VALUE")
        found[name] = value
    return found


async def perform(api: Client, args: argparse.Namespace) -> Answer:
    match args.action:
        case "run":
            body = {"params": params(args.param), "by": args.by}
            started = await api.call("POST", "procedures", args.name, "runs", body=body)
            return await follow(api, started) if args.follow else started
        case "runs":
            query = {"procedure": args.procedure, "status": args.status, "limit": args.limit}
            return await api.call("GET", "procedure-runs", query=query)
        case "show":
            found = await api.call("GET", "procedure-runs", args.id)
            return await follow(api, found) if args.follow else found
        case "approve" | "reject" | "cancel":
            body = {"by": args.by, "reason": args.reason}
            return await api.call("POST", "procedure-runs", args.id, args.action, body=body)
        case _:
            return await api.call("GET", "procedures")


async def follow(api: Client, run: Answer) -> Answer:
    """The run once it has ended, its new timeline entries printed as they come."""
    printed = 0
    while True:
        steps = entries(run, "timeline")
        for entry in steps[printed:]:
            print(f"{when(field(entry, 'ts'))}  {text(entry, 'kind'):<10} {text(entry, 'message')}")
        printed = len(steps)
        if field(run, "status") != RunStatus.RUNNING:
            return run
        await asyncio.sleep(FOLLOW_POLL)
        run = await api.call("GET", "procedure-runs", text(run, "id"))


def render(args: argparse.Namespace, answer: Answer) -> str:
    match args.action:
        case "run" if not args.follow:
            ident = text(answer, "id")
            return f"started {ident}: `runbookd procedure show {ident} --follow` follows it"
        case "run" | "show" if args.follow:
            return f"{text(answer, 'id')} {text(answer, 'status')}"
        case "show":
            return run_detail(answer)
        case "runs":
            return run_table(entries(answer, "runs"))
        case "approve" | "reject":
            done = {"approve": "approved", "reject": "rejected"}[args.action]
            return f"{done} the step {text(answer, 'incident')} waited on"
        case "cancel":
            return f"cancelling {text(answer, 'run')}: the step going on stops, then undo runs"
        case _:
            return procedure_table(entries(answer, "procedures"))


def procedure_table(procedures: list[Any]) -> str:
    if not procedures:
        return "no procedures configured"
    rows = []
    for p in procedures:
        given = field(p, "params")
        names = ", ".join(given) if isinstance(given, dict) else ""
        steps = " -> ".join(text(s, "name") for s in entries(p, "steps"))
        rows.append([text(p, "name"), names or "-", steps])
    return table(["NAME", "PARAMS", "STEPS"], rows)


def run_table(runs: list[Any]) -> str:
    if not runs:
        return "no procedure runs"
    rows = [
        [
            text(r, "id"),
            text(r, "procedure"),
            text(r, "status"),
            text(r, "by"),
            when(field(r, "started_at")),
            when(field(r, "ended_at")),
        ]
        for r in runs
    ]
    return table(["RUN", "PROCEDURE", "STATUS", "BY", "STARTED", "ENDED"], rows)


def run_detail(run: Answer) -> str:
    given = field(run, "params")
    shown = " ".join(f"{k}={v}" for k, v in given.items()) if isinstance(given, dict) else ""
    lines = [
        f"{text(run, 'id')}  {text(run, 'procedure')}  {text(run, 'status')}",
        f"by:      {text(run, 'by')}",
        f"params:  {shown or '-'}",
        f"started: {when(field(run, 'started_at'))}",
        f"ended:   {when(field(run, 'ended_at'))}",
        "",
        table(
            ["STEP", "STATUS", "DETAIL"],
            [
                [text(s, "name"), text(s, "status"), text(s, "detail")]
                for s in entries(run, "steps")
            ],
        ),
        "",
        table(
            ["TIME", "WHAT", "MESSAGE"],
            [
                [when(field(e, "ts")), text(e, "kind"), text(e, "message")]
                for e in entries(run, "timeline")
            ],
        ),
    ]
    return "\n".join(lines)
