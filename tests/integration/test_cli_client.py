"""`runbookd incidents` and `runbookd silence` against a real daemon: tables, --json, tokens,
and exit codes (0 ok, 1 the API refused, 2 usage or no daemon)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import structlog

from daemon.cli.main import main
from daemon.core.models import Incident
from daemon.runtime.daemon import Daemon
from tests.cli_daemon import TOKEN, cli_daemon
from tests.utils import free_port, wait_for

State = dict[str, object]


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    """The daemon's log lines would land in the command's captured output."""
    with structlog.testing.capture_logs():
        yield


@pytest.fixture
async def daemon(tmp_path: Path, app_state: tuple[State, str]) -> AsyncIterator[Daemon]:
    async with cli_daemon(tmp_path, app_state[1]) as running:
        yield running


@pytest.fixture
def url(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RUNBOOKD_TOKEN", TOKEN)
    return f"http://127.0.0.1:{daemon.port}"


async def runbookd(*argv: str) -> int:
    """The command in-process; in a thread, since it runs an event loop of its own."""
    return await asyncio.to_thread(main, list(argv))


async def open_incident(daemon: Daemon, state: State) -> Incident:
    await wait_for(lambda: daemon.engine.evaluators["down"].last_value == 1.0)
    state["up"] = False
    await wait_for(lambda: "down" in daemon.engine.incidents)
    incident = daemon.engine.incidents["down"]
    await wait_for(lambda: any(e.kind == "result" for e in incident.timeline))
    return incident


def in_hours(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


async def test_list_show_acknowledge_and_resolve_incidents(
    daemon: Daemon,
    url: str,
    app_state: tuple[State, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    incident = await open_incident(daemon, app_state[0])
    assert await runbookd("incidents", "--url", url) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "STATUS", "RULE", "SEVERITY", "OPENED", "SUMMARY"]
    assert row.split()[:4] == [incident.id, "open", "down", "critical"]

    assert await runbookd("incidents", "list", "--url", url, "--status", "open", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [i["id"] for i in listed["incidents"]] == [incident.id]

    assert await runbookd("incidents", "show", incident.id, "--url", url) == 0
    shown = capsys.readouterr().out
    assert f"{incident.id}  open  critical" in shown
    assert "rule:     down (check health)" in shown
    assert "value=0" in shown.split("trigger:")[1]
    steps = [line.split()[1] for line in shown.split("TIME")[1].splitlines()[1:]]
    assert steps == ["opened", "action", "result"]

    ack = ["incidents", "ack", incident.id, "--by", "ana", "--reason", "on it", "--url", url]
    assert await runbookd(*ack) == 0
    assert capsys.readouterr().out == f"acknowledged {incident.id} (by ana)\n"
    assert await runbookd(*ack) == 1
    refused = capsys.readouterr().err
    assert refused == f"runbookd: HTTP 409: incident {incident.id!r} is already acknowledged\n"

    assert await runbookd("incidents", "resolve", incident.id, "--by", "ana", "--url", url) == 0
    assert capsys.readouterr().out == f"resolved {incident.id} (by ana)\n"
    assert await runbookd("incidents", "--url", url, "list", "--status", "resolved") == 0
    assert f"{incident.id}  resolved" in capsys.readouterr().out


async def test_an_alert_incident_shows_its_alert_and_how_many_joined(
    daemon: Daemon, url: str, session: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    def alert(fingerprint: str) -> dict[str, object]:
        labels = {"alertname": "HighErrorRate", "instance": fingerprint}
        return {"status": "firing", "labels": labels, "fingerprint": fingerprint}

    headers = {"Authorization": f"Bearer {TOKEN}"}
    for alerts in ([alert("a1")], [alert("a2")], [alert("a3"), alert("a4")]):
        body = {"version": "4", "status": "firing", "alerts": alerts}
        async with session.post(f"{url}/api/v1/alerts", json=body, headers=headers) as r:
            assert r.status == 200
    incident = daemon.engine.incidents["errors"]
    assert await runbookd("incidents", "show", incident.id, "--url", url) == 0
    assert "rule:     errors (alert HighErrorRate from alertmanager, 4 alerts)" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize("verb", ["approve", "reject"])
async def test_approve_and_reject_pass_the_api_refusal_on(
    url: str, verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await runbookd("incidents", verb, "inc-nope", "--by", "ana", "--url", url) == 1
    assert capsys.readouterr().err == (
        "runbookd: HTTP 404: incident 'inc-nope' has no step waiting for approval\n"
    )


async def test_add_list_and_expire_silences(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    who = ["--by", "ana", "--comment", "deploy", "--url", url]
    assert await runbookd("silence", "add", "--rule", "down", "--duration", "2h", *who) == 0
    created = capsys.readouterr().out
    assert re.match(r"created sil-\w+: active until \S+Z$", created)
    silence_id = created.split()[1].rstrip(":")
    labels = ["--label", "service=web", "--label", "env=prod", "--ends-at", in_hours(1)]
    assert await runbookd("silence", "add", *labels, *who) == 0
    window = ["--check", "health", "--starts-at", in_hours(1), "--duration", "1h"]
    assert await runbookd("silence", "add", *window, *who) == 0
    assert ": scheduled from " in capsys.readouterr().out.splitlines()[-1]

    assert await runbookd("silence", "--url", url) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "STATE", "STARTS", "ENDS", "MATCHERS", "BY", "COMMENT"]
    # BY: the name typed, and the token that created it (the CLI's token is named ops).
    assert all(row.split()[-4:-1] == ["ana", "(token", "ops)"] for row in rows)
    matchers = sorted(" ".join(row.split()[4:-4]) for row in rows)
    assert sorted(row.split()[1] for row in rows) == ["active", "active", "scheduled"]
    assert matchers == ["check=health", "rule=down", "service=web env=prod"]

    assert await runbookd("silence", "expire", silence_id, "--url", url) == 0
    assert capsys.readouterr().out == f"expired {silence_id}\n"
    assert await runbookd("silence", "list", "--url", url, "--json") == 0
    assert silence_id not in capsys.readouterr().out
    assert await runbookd("silence", "list", "--expired", "--url", url) == 0
    ended = next(line for line in capsys.readouterr().out.splitlines() if silence_id in line)
    assert ended.split()[1] == "ended"


async def test_a_silence_the_api_refuses_exits_1_with_its_reason(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["silence", "add", "--rule", "down", "--duration", "91d", "--by", "a", "--comment", "c"]
    assert await runbookd(*argv, "--url", url) == 1
    assert capsys.readouterr().err == (
        "runbookd: HTTP 400: ends_at: a silence lasts at most 90 days\n"
    )


async def test_usage_errors_exit_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    no_matcher = ["silence", "add", "--duration", "2h", "--by", "a", "--comment", "c"]
    assert await runbookd(*no_matcher, "--url", url) == 2
    assert capsys.readouterr().err == (
        "runbookd: silence add: give --rule, --check or --label (what to silence)\n"
    )
    assert await runbookd("incidents", "--url", "ftp://example.org") == 2
    assert "not an http(s) URL" in capsys.readouterr().err
    for argv in (
        ["silence", "add", "--rule", "r", "--duration", "soon", "--by", "a", "--comment", "c"],
        ["silence", "add", "--rule", "r", "--by", "a", "--comment", "c"],  # no end
        ["incidents", "ack", "inc-1"],  # no --by
        ["incidents", "list", "--status", "bogus"],
    ):
        with pytest.raises(SystemExit) as exited:
            await runbookd(*argv, "--url", url)
        assert exited.value.code == 2, argv


async def test_tokens_from_the_option_a_file_or_the_environment(
    daemon: Daemon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{daemon.port}"
    monkeypatch.delenv("RUNBOOKD_TOKEN", raising=False)
    assert await runbookd("incidents", "--url", url) == 1
    assert capsys.readouterr().err == (
        "runbookd: HTTP 401: missing bearer token (Authorization: Bearer TOKEN)\n"
    )
    assert await runbookd("incidents", "--url", url, "--token", "wrong-token-0123456789") == 1
    assert capsys.readouterr().err == "runbookd: HTTP 401: invalid token\n"
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    assert await runbookd("incidents", "--url", url, "--token-file", str(token_file)) == 0
    assert await runbookd("incidents", "--url", url, "--token", TOKEN) == 0
    monkeypatch.setenv("RUNBOOKD_TOKEN", TOKEN)
    assert await runbookd("incidents", "--url", url) == 0
    capsys.readouterr()
    assert await runbookd("incidents", "--url", url, "--token-file", str(tmp_path / "no")) == 2
    assert capsys.readouterr().err.startswith(f"runbookd: cannot read {tmp_path / 'no'}: ")


async def test_no_daemon_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert await runbookd("silence", "--url", url) == 2
    assert capsys.readouterr().err == f"runbookd: cannot connect to {url}: Connection refused\n"
