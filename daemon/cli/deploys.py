"""`runbookd deploy announce` (CI tells a running daemon that a deploy starts) and `runbookd
deploys` (list them, show one with its timeline), over the daemon's HTTP API."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from daemon.cli.common import (
    action,
    connection_options,
    entries,
    field,
    shown,
    table,
    text,
    when,
)
from daemon.deploys.models import KINDS, DeployStatus

if TYPE_CHECKING:  # `runbookd run` builds this parser, and needs no client
    from daemon.cli.client import Answer, Client

COMMANDS = ("deploy", "deploys")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deploy = sub.add_parser("deploy", help="tell a running daemon that a deploy starts (CI)")
    connection_options(deploy, defaults=True)
    actions = deploy.add_subparsers(dest="action", metavar="ACTION", required=True)
    announce = action(actions, "announce", "a deploy starts: it is announced and watched")
    announce.add_argument("--version", required=True, help="what is deployed (v1.2.3)")
    announce.add_argument("--environment", default="production", help="(default: production)")
    announce.add_argument("--kind", choices=KINDS, default="standard", help="(default: standard)")
    announce.add_argument("--commit", help="the commit deployed")
    announce.add_argument("--by", help="who deploys")

    deploys = sub.add_parser("deploys", help="list deploys, show one with its timeline")
    connection_options(deploys, defaults=True)
    deploys.set_defaults(status=None, limit=None)
    actions = deploys.add_subparsers(dest="action", metavar="ACTION")
    listing = action(actions, "list", "deploys, newest first (the default)")
    listing.add_argument("--status", choices=[s.value for s in DeployStatus])
    listing.add_argument("--limit", type=int, help="at most this many (default 100)")
    action(actions, "show", "one deploy with its timeline").add_argument("id", metavar="ID")


async def perform(api: Client, args: argparse.Namespace) -> Answer:
    match args.command, args.action:
        case "deploy", "announce":
            body: dict[str, Any] = {
                "version": args.version,
                "environment": args.environment,
                "kind": args.kind,
                "commit": args.commit,
                "by": args.by,
            }
            return await api.announce_deploy({k: v for k, v in body.items() if v is not None})
        case "deploys", "show":
            return await api.deploy(args.id)
        case _:
            return await api.deploys(status=args.status, limit=args.limit)


def render(args: argparse.Namespace, answer: Answer) -> str:
    match args.command, args.action:
        case "deploy", "announce":
            deploy = field(answer, "deploy")
            ident = text(deploy, "id")
            said = {"watching": "watching", "recorded": "recorded (not watched)"}
            done = said.get(str(field(answer, "action")), text(answer, "action"))
            where = f"{text(deploy, 'version')} to {text(deploy, 'environment')}"
            return f"{done} {ident} ({where}): `runbookd deploys show {ident}` follows it"
        case "deploys", "show":
            return deploy_detail(answer)
        case _:
            return deploy_table(entries(answer, "deploys"))


def deploy_table(deploys: list[object]) -> str:
    if not deploys:
        return "no deploys"
    columns = ("id", "status", "version", "environment", "kind", "source")
    rows = [
        [*(text(d, c) for c in columns), when(field(d, "started_at")), when(field(d, "ended_at"))]
        for d in deploys
    ]
    return table(["ID", "STATUS", "VERSION", "ENV", "KIND", "SOURCE", "STARTED", "ENDED"], rows)


def deploy_detail(deploy: Answer) -> str:
    found = field(deploy, "baseline")
    given = found.items() if isinstance(found, dict) else []
    baseline = " ".join(f"{shown(k)}={shown(v)}" for k, v in given)
    timeline = field(deploy, "timeline")
    steps = timeline if isinstance(timeline, list) else []
    who = " ".join(
        f"{label} {text(deploy, key)}"
        for label, key in (("commit", "commit"), ("by", "by"))
        if field(deploy, key) is not None
    )
    lines = [
        f"{text(deploy, 'id')}  {text(deploy, 'status')}  {text(deploy, 'kind')}",
        f"version:  {text(deploy, 'version')} to {text(deploy, 'environment')}"
        + (f" ({who})" if who else ""),
        f"source:   {text(deploy, 'source')}",
        f"previous: {text(deploy, 'previous')}",
        f"baseline: {baseline or '-'}",
        f"started:  {when(field(deploy, 'started_at'))}",
        f"ended:    {when(field(deploy, 'ended_at'))}",
        f"incident: {text(deploy, 'incident')}",
        "",
        table(
            ["TIME", "STEP", "WHAT"],
            [[when(field(e, "ts")), text(e, "kind"), text(e, "message")] for e in steps],
        ),
    ]
    return "\n".join(lines)
