"""systemd integration without systemd: no NOTIFY_SOCKET means no notifications and no tasks,
the watchdog interval, credentials, and the unit file's restart policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.config.loader import load_config_text
from daemon.runtime.daemon import ExitCode
from daemon.runtime.sdnotify import watchdog_interval
from remediations.pagerduty import PagerDutyConfig
from tests.paths import ROOT
from tests.sdnotify import MakeNotifier, notifiers

UNIT = ROOT / "systemd" / "runbookd.service"


# --- sdnotify alone -------------------------------------------------------------------------


@pytest.fixture
async def make_notifier() -> AsyncIterator[MakeNotifier]:
    """Makes notifiers from a given environment, and closes them after the test."""
    async with notifiers() as make:
        yield make


def test_without_notify_socket_nothing_happens(make_notifier: MakeNotifier) -> None:
    notifier = make_notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.send("READY=1")
    notifier.ready("x")
    assert notifier._sock is None  # not even a socket was made


async def test_without_notify_socket_no_tasks_start(make_notifier: MakeNotifier) -> None:
    notifier = make_notifier({"WATCHDOG_USEC": "1000"})
    before = asyncio.all_tasks()
    notifier.start(lambda: "x", asyncio.Event())
    assert asyncio.all_tasks() == before


def test_an_unsupported_socket_is_not_used(make_notifier: MakeNotifier) -> None:
    with capture_logs() as logs:
        notifier = make_notifier({"NOTIFY_SOCKET": "vsock:2:1234", "WATCHDOG_USEC": "1000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert logs[0]["event"] == "NOTIFY_SOCKET not supported: not notifying systemd"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),  # someone else's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(environ, pid=42) == expected


# --- the unit file --------------------------------------------------------------------------


def test_a_credential_is_read_through_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the unit's comment tells configs to do: ${ENV} works inside *_file values."""
    (tmp_path / "runbookd_pagerduty").write_text("0123456789abcdef0123456789abcdef\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    text = "remediations:\n  page:\n    type: pagerduty\n"
    text += "    routing_key_file: ${CREDENTIALS_DIRECTORY}/runbookd_pagerduty\n"
    page = load_config_text(text).remediations["page"]
    assert isinstance(page, PagerDutyConfig)
    assert page.routing_key.get_secret_value() == "0123456789abcdef0123456789abcdef"


def test_the_unit_restarts_unless_the_config_is_invalid() -> None:
    """Exit codes 3 (could not start) and 4 (a core task died) restart; 2 (invalid) cannot."""
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if line.startswith("Rest")
    )
    assert settings["Restart"] == "on-failure"
    assert settings["RestartPreventExitStatus"].split() == [str(ExitCode.CONFIG_INVALID)]
    restarted = {ExitCode.START_FAILED, ExitCode.CORE_TASK_DIED}
    assert all(code not in (0, ExitCode.CONFIG_INVALID) for code in restarted)


async def test_a_ready_dropped_by_a_full_socket_is_sent_again(
    make_notifier: MakeNotifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The datagram socket's queue was full (systemd slow to read, the watchdog pinging):
    READY=1 went nowhere, and systemd would have waited for it until its start timeout."""
    monkeypatch.setattr("daemon.runtime.sdnotify.STATUS_EVERY", 0.01)
    notifier = make_notifier({"NOTIFY_SOCKET": "/run/systemd/notify"})
    sent: list[str] = []
    dropped = ["READY=1"]  # the first READY=1 finds the queue full

    def send(*fields: str) -> bool:
        if dropped and fields[0] == dropped[0]:
            dropped.pop()
            return False
        sent.append(fields[0])
        return True

    notifier.send = send  # type: ignore[method-assign]
    started = asyncio.Event()
    started.set()
    notifier.start(lambda: "watching", started)
    for _ in range(100):  # bounded: a few of the announcer's rounds
        if "READY=1" in sent:
            break
        await asyncio.sleep(0.01)
    assert sent.count("READY=1") == 1
