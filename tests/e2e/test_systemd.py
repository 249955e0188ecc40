"""runbookd under systemd: the sd_notify protocol, end to end and alone, and the unit file.

No systemd runs here as PID 1, so the test plays its part: it binds the notify socket,
starts the real daemon process with NOTIFY_SOCKET and WATCHDOG_USEC, and reads what it says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from daemon.runtime.sdnotify import monotonic_usec
from tests.paths import ROOT
from tests.sdnotify import MakeNotifier, notifiers
from tests.services import missing
from tests.utils import serve

UNIT = ROOT / "systemd" / "runbookd.service"
DROP_IN = ROOT / "systemd" / "runbookd.service.d" / "remediations.conf.example"
WATCHDOG_USEC = 200_000  # pings every 0.1s
WAIT = 30.0  # the bound on every wait for the daemon (generous: CI machines are shared)
LIFECYCLE = {"READY", "RELOADING", "STOPPING"}

Message = dict[str, str]


# --- the systemd end of the notify socket ---------------------------------------------------


def parse(datagram: bytes) -> Message:
    fields = (line.split("=", 1) for line in datagram.decode().split("\n") if line)
    return {key: value for key, value in fields}


class NotifySocket:
    """Receives sd_notify datagrams and keeps them all, in order."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[Message] = []

    async def receive(self, within: float = WAIT) -> Message:
        async with asyncio.timeout(within):
            data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        self.messages.append(parse(data))
        return self.messages[-1]

    async def expect(
        self, key: str, within: float = WAIT, sender: subprocess.Popen[bytes] | None = None
    ) -> Message:
        """The next message carrying `key`; others (pings, STATUS=) are kept, not returned.

        Gives up early when the `sender` process has exited."""
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {key}= within {within}s; got {self.messages}")
            try:
                message = await self.receive(min(remaining, 0.2))
            except TimeoutError:
                if sender is not None and sender.poll() is not None:
                    exited = f"no {key}=: the sender exited with {sender.returncode}"
                    raise AssertionError(exited) from None
                continue
            if key in message:
                return message

    async def expect_status(
        self, status: str, within: float = WAIT, sender: subprocess.Popen[bytes] | None = None
    ) -> None:
        """Until a message (READY=1 or a change on its own) carries STATUS=`status`."""
        deadline = time.monotonic() + within
        while True:
            message = await self.expect("STATUS", deadline - time.monotonic(), sender)
            if message["STATUS"] == status:
                return

    def drain(self) -> None:
        """Keep what is queued now, without waiting."""
        with contextlib.suppress(BlockingIOError):
            while True:
                self.messages.append(parse(self.sock.recv(65536)))

    def lifecycle(self) -> list[str]:
        """READY / RELOADING / STOPPING, in the order they came."""
        return [key for m in self.messages for key in m if key in LIFECYCLE]

    def pings_since(self, index: int) -> int:
        return sum("WATCHDOG" in m for m in self.messages[index:])


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[NotifySocket, str]]:
    """A socket bound to a path, and the NOTIFY_SOCKET value that names it."""
    path = str(tmp_path / "notify.sock")
    listener = NotifySocket(path)
    yield listener, path
    listener.sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[NotifySocket, str]]:
    name = f"runbookd-test-{uuid.uuid4().hex}"
    listener = NotifySocket("\0" + name)
    yield listener, "@" + name
    listener.sock.close()


# --- the daemon as a real process -----------------------------------------------------------

CONFIG = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
  drain_grace: 20s
checks:
  health:
    type: http
    url: {url}/health
    interval: 100ms
    timeout: 1s
rules:
  down:
    when: health.up < 1
    do: [slow_hook]
remediations:
  slow_hook:
    type: http
    url: {url}/slow
    timeout: 15s
    body: {{incident: "{{{{ incident.id }}}}"}}
"""


class App:
    """The watched app: /health as `up` says; /slow holds each call until `release`."""

    def __init__(self) -> None:
        self.up = True
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.finished: list[object] = []  # bodies of the calls answered
        self.done = asyncio.Event()

    def build(self) -> web.Application:
        async def health(request: web.Request) -> web.Response:
            return web.json_response({}, status=200 if self.up else 503)

        async def slow(request: web.Request) -> web.Response:
            self.arrived.set()
            await self.release.wait()
            self.finished.append(await request.json())
            self.done.set()
            return web.json_response({})

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_post("/slow", slow)
        return app


@pytest.fixture
async def app() -> AsyncIterator[tuple[App, str]]:
    watched = App()
    async with serve(watched.build()) as url:
        try:
            yield watched, url
        finally:
            watched.release.set()  # a held call would hold up the server's shutdown


@contextlib.contextmanager
def daemon_process(
    config: Path, notify_socket: str, *, prelude: str = ""
) -> Iterator[subprocess.Popen[bytes]]:
    """`runbookd run` as systemd would start it; the log goes to a file next to the config.

    `prelude` is Python run in the daemon's process first (e.g. to restrict it)."""
    code = f"{prelude}\nfrom daemon.cli.main import main\nraise SystemExit(main())"
    argv = [sys.executable, "-c", code, "run", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env |= {"NOTIFY_SOCKET": notify_socket, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    log = config.with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT)


async def exit_code(proc: subprocess.Popen[bytes], within: float = WAIT) -> int:
    deadline = time.monotonic() + within
    while (code := proc.poll()) is None:
        assert time.monotonic() < deadline, "the daemon did not exit in time"
        await asyncio.sleep(0.05)
    return code


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "runbookd.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", url=url))
    return path


async def test_notify_ready_watchdog_reload_and_drain_on_stop(
    tmp_path: Path, app: tuple[App, str], notify_socket: tuple[NotifySocket, str]
) -> None:
    watched, url = app
    listener, address = notify_socket
    config = write_config(tmp_path, url)
    with daemon_process(config, address) as proc:
        ready = await listener.expect("READY", sender=proc)
        watching = "watching 1 check, 1 rule; 0 incidents open"
        # READY=1 does not wait for the check's first run; it may have come already.
        assert ready["STATUS"] in (watching, f"{watching}; first round: 0/1 checks have run")
        if ready["STATUS"] != watching:
            await listener.expect_status(watching, sender=proc)
        for _ in range(3):
            await listener.expect("WATCHDOG", sender=proc)

        # A valid change: RELOADING=1 (with the time, for Type=notify-reload), then READY=1.
        config.write_text(config.read_text().replace("interval: 100ms", "interval: 200ms"))
        proc.send_signal(signal.SIGHUP)
        reloading = await listener.expect("RELOADING", sender=proc)
        assert 0 < int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
        await listener.expect("READY", sender=proc)

        # A refused config: READY=1 again all the same, the old config keeps running.
        config.write_text("checks: [not, a, mapping\n")
        proc.send_signal(signal.SIGHUP)
        await listener.expect("RELOADING", sender=proc)
        await listener.expect("READY", sender=proc)
        assert proc.poll() is None

        # SIGTERM while a remediation runs: STOPPING=1, and the remediation may finish.
        watched.up = False
        async with asyncio.timeout(WAIT):
            await watched.arrived.wait()
        proc.send_signal(signal.SIGTERM)
        stopping = await listener.expect("STOPPING", sender=proc)
        assert stopping["STATUS"] == "stopping: draining running remediations"
        seen = len(listener.messages)
        for _ in range(2):  # the watchdog goes on while draining (a ping every 0.1 s)
            await listener.expect("WATCHDOG", sender=proc)
        assert proc.poll() is None, "exited without waiting for the running remediation"
        assert listener.pings_since(seen) >= 2, "the watchdog must go on while draining"
        watched.release.set()
        assert await exit_code(proc) == 0

    log = config.with_suffix(".log").read_text()
    assert len(watched.finished) == 1
    assert '"step": "result"' in log
    assert "drain grace over" not in log
    assert "reload refused" in log
    assert listener.lifecycle() == [
        "READY",
        "RELOADING",
        "READY",
        "RELOADING",
        "READY",
        "STOPPING",
    ]


# The engine's ticker dies (any core task would do) once the test creates the file `die`
# next to the config.
TICKER_DIES_PRELUDE = """
import asyncio, pathlib, daemon.runtime.daemon
async def _tick(self):
    die = self.config_path.with_name("die")
    while not die.exists():
        await asyncio.sleep(0.02)
    raise RuntimeError("injected: the ticker broke")
daemon.runtime.daemon.Daemon._tick = _tick
"""


async def test_a_dead_core_task_stops_the_pings_and_exits_4_after_the_drain(
    tmp_path: Path,
    app: tuple[App, str],
    notify_socket: tuple[NotifySocket, str],
    session: aiohttp.ClientSession,
) -> None:
    watched, url = app
    listener, address = notify_socket
    config = write_config(tmp_path, url)
    log = config.with_suffix(".log")
    with daemon_process(config, address, prelude=TICKER_DIES_PRELUDE) as proc:
        await listener.expect("READY", sender=proc)
        await listener.expect("WATCHDOG", sender=proc)
        watched.up = False  # a remediation starts, and is held: the drain will wait for it
        async with asyncio.timeout(WAIT):
            await watched.arrived.wait()

        (tmp_path / "die").touch()
        stopping = await listener.expect("STOPPING", sender=proc)
        failure = "core task engine-tick raised RuntimeError: injected: the ticker broke"
        assert stopping["STATUS"] == f"failed, stopping: {failure}"
        seen = len(listener.messages)
        # Draining, the API still answers: unhealthy, and why.
        (port,) = re.findall(r'"listen": "127\.0\.0\.1:(\d+)"', log.read_text())
        async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 503
            assert await r.json() == {"status": "failed", "reason": failure}
        # Five ping intervals: before the death a ping came every 0.1 s; none may come now.
        await asyncio.sleep(5 * WATCHDOG_USEC / 2 / 1e6)
        listener.drain()
        assert proc.poll() is None, "exited without waiting for the running remediation"
        assert listener.pings_since(seen) == 0, "the watchdog is still fed"
        watched.release.set()
        assert await exit_code(proc) == 4

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    (died,) = [line for line in lines if line["event"] == "core task died"]
    assert died["task"] == "engine-tick"
    assert "Traceback" in died["exception"]
    assert died["exception"].endswith("RuntimeError: injected: the ticker broke")
    assert len(watched.finished) == 1, "the running remediation was let finish"
    assert listener.lifecycle() == ["READY", "STOPPING"]


LATER = """
runbookd:
  listen: 127.0.0.1:0
  state_dir: {state}
checks:
  soon: {{type: http, url: "{url}/health", interval: 100ms, jitter: 0}}
  # Its first run comes 0.92 x 1h after the start: long after this test.
  later: {{type: http, url: "{url}/health", interval: 1h, jitter: 1}}
"""


async def test_ready_before_the_first_round_and_the_status_counts_it(
    tmp_path: Path, app: tuple[App, str], notify_socket: tuple[NotifySocket, str]
) -> None:
    listener, address = notify_socket
    config = tmp_path / "runbookd.yaml"
    config.write_text(LATER.format(state=tmp_path / "state", url=app[1]))
    watching = "watching 2 checks, 0 rules; 0 incidents open"
    with daemon_process(config, address) as proc:
        ready = await listener.expect("READY", sender=proc)
        one_ran = f"{watching}; first round: 1/2 checks have run"
        assert ready["STATUS"] in (f"{watching}; first round: 0/2 checks have run", one_ran)
        if ready["STATUS"] != one_ran:
            await listener.expect_status(one_ran, sender=proc)
        proc.send_signal(signal.SIGTERM)
        assert (await listener.expect("STOPPING", sender=proc))["STATUS"] == "stopping"
        assert await exit_code(proc) == 0
    assert listener.lifecycle() == ["READY", "STOPPING"]


async def test_notify_to_an_abstract_socket_with_no_checks(
    tmp_path: Path, abstract_socket: tuple[NotifySocket, str]
) -> None:
    """No checks: nothing to wait for, READY=1 comes right after the start."""
    listener, address = abstract_socket
    config = tmp_path / "runbookd.yaml"
    config.write_text(f"runbookd:\n  listen: 127.0.0.1:0\n  state_dir: {tmp_path / 'state'}\n")
    with daemon_process(config, address) as proc:
        ready = await listener.expect("READY", sender=proc)
        assert ready["STATUS"] == "watching 0 checks, 0 rules; 0 incidents open"
        await listener.expect("WATCHDOG", sender=proc)
        proc.send_signal(signal.SIGTERM)
        assert (await listener.expect("STOPPING", sender=proc))["STATUS"] == "stopping"
        assert await exit_code(proc) == 0
    assert listener.lifecycle() == ["READY", "STOPPING"]


# The kernel's own MemoryDenyWriteExecute (PR_SET_MDWE, Linux >= 6.3): what systemd's
# seccomp filter refuses, the kernel refuses here. A W+X mapping must fail, or it is not on.
MDWE_PRELUDE = """
import ctypes, mmap, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("PR_SET_MDWE is on, yet a writable+executable mapping was allowed")
"""


async def test_the_daemon_runs_with_memory_deny_write_execute(
    tmp_path: Path,
    app: tuple[App, str],
    notify_socket: tuple[NotifySocket, str],
    make_notifier: MakeNotifier,
) -> None:
    watched, url = app
    listener, address = notify_socket
    config = write_config(tmp_path, url)
    watched.release.set()  # the remediation answers at once
    with daemon_process(config, address, prelude=MDWE_PRELUDE) as proc:
        try:
            await listener.expect("READY", sender=proc)
        except AssertionError:
            if proc.returncode == 77:
                pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
            raise AssertionError(config.with_suffix(".log").read_text()) from None
        watched.up = False  # a remediation runs under it too
        async with asyncio.timeout(WAIT):
            await watched.done.wait()
        proc.send_signal(signal.SIGTERM)
        assert await exit_code(proc) == 0


# --- sdnotify alone -------------------------------------------------------------------------


@pytest.fixture
async def make_notifier() -> AsyncIterator[MakeNotifier]:
    """Makes notifiers from a given environment, and closes them after the test."""
    async with notifiers() as make:
        yield make


def test_messages_to_a_path(
    notify_socket: tuple[NotifySocket, str], make_notifier: MakeNotifier
) -> None:
    listener, address = notify_socket
    listener.sock.setblocking(True)
    listener.sock.settimeout(WAIT)
    notifier = make_notifier({"NOTIFY_SOCKET": address})
    notifier.ready("watching\nREADY=1")  # a newline cannot make a field of its own
    assert listener.sock.recv(4096) == b"READY=1\nSTATUS=watching READY=1"
    before = monotonic_usec()
    notifier.reloading()
    fields = parse(listener.sock.recv(4096))
    assert fields.keys() == {"RELOADING", "MONOTONIC_USEC"}
    assert before <= int(fields["MONOTONIC_USEC"]) <= monotonic_usec()
    notifier.status("watching\nREADY=1")  # unchanged: not sent
    notifier.status("busy")
    notifier.stopping("stopping")
    assert listener.sock.recv(4096) == b"STATUS=busy"
    assert listener.sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_abstract_address(
    abstract_socket: tuple[NotifySocket, str], make_notifier: MakeNotifier
) -> None:
    listener, address = abstract_socket
    listener.sock.settimeout(WAIT)
    listener.sock.setblocking(True)
    notifier = make_notifier({"NOTIFY_SOCKET": address})
    assert notifier.address == "\0" + address[1:]
    assert notifier.send("WATCHDOG=1")
    assert listener.sock.recv(4096) == b"WATCHDOG=1"


def test_a_failing_send_is_logged_once_and_never_raises(
    tmp_path: Path, make_notifier: MakeNotifier
) -> None:
    path = tmp_path / "gone.sock"
    notifier = make_notifier({"NOTIFY_SOCKET": str(path)})
    with capture_logs() as logs:
        assert not notifier.send("READY=1")
        notifier.ready("x")
        notifier.stopping("y")
        receiver = NotifySocket(str(path))  # systemd is back
        assert notifier.send("WATCHDOG=1")
        receiver.sock.close()
    assert [entry["event"] for entry in logs] == [
        "cannot notify systemd",
        "notifying systemd works again",
    ]


def test_a_full_queue_never_blocks(
    notify_socket: tuple[NotifySocket, str], make_notifier: MakeNotifier
) -> None:
    _, address = notify_socket  # nobody reads: the kernel queue fills up
    notifier = make_notifier({"NOTIFY_SOCKET": address})
    started = time.monotonic()
    with capture_logs() as logs:
        sent = [notifier.send("WATCHDOG=1") for _ in range(5000)]
    assert time.monotonic() - started < 5
    assert sent[0]
    assert not sent[-1]
    assert len(logs) == 1


async def test_watchdog_pings_and_ready_from_the_loop(
    notify_socket: tuple[NotifySocket, str], make_notifier: MakeNotifier
) -> None:
    listener, address = notify_socket
    notifier = make_notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000"})
    ready = asyncio.Event()
    notifier.start(lambda: "all good", ready)
    try:
        for _ in range(3):
            assert await listener.receive() == {"WATCHDOG": "1"}
        ready.set()
        assert await listener.expect("READY") == {"READY": "1", "STATUS": "all good"}
        assert notifier.announced
    finally:
        await notifier.close()
    listener.drain()  # what was sent before close
    count = len(listener.messages)
    await asyncio.sleep(0.1)  # ten ping intervals: none may come now
    listener.drain()
    assert len(listener.messages) == count


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        missing("systemd-analyze not installed (Debian: apt-get install systemd)")
    return found


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The unit, its ExecStart pointed at this venv's runbookd (verify wants it to exist)."""
    runbookd = Path(sys.executable).parent / "runbookd"
    assert runbookd.exists(), "the project is not installed in this venv"
    text = UNIT.read_text().replace("/usr/bin/runbookd", str(runbookd))
    assert str(runbookd) in text
    (tmp_path / "runbookd.service").write_text(text)
    return tmp_path


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def assert_verifies(unit: Path) -> None:
    result = analyze("verify", str(unit))
    complaints = [line for line in result.stderr.splitlines() if "runbookd" in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


def test_unit_verifies(unit_dir: Path) -> None:
    assert_verifies(unit_dir / "runbookd.service")


def test_unit_security_is_rated_ok_or_better(unit_dir: Path) -> None:
    if "--offline" not in analyze("--help").stdout:
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 250)")
    # --threshold is in tenths: over 4.9 is MEDIUM.
    result = analyze(
        "security", "--offline=true", "--threshold=49", str(unit_dir / "runbookd.service")
    )
    match = re.search(
        r"Overall exposure level for runbookd.service: (\d+\.\d) (\w+)", result.stdout
    )
    assert match is not None, result.stdout + result.stderr
    assert result.returncode == 0, match.group(0)
    assert match.group(2) in ("OK", "SAFE", "PERFECT")


def test_remediations_drop_in_example_verifies(unit_dir: Path) -> None:
    """Every directive the example suggests (commented out there) is one systemd knows."""
    directive = re.compile(r"^#([A-Z][A-Za-z]+=)", re.MULTILINE)
    text = DROP_IN.read_text()
    assert len(directive.findall(text)) >= 10
    drop_in = unit_dir / "runbookd.service.d"
    drop_in.mkdir()
    (drop_in / "remediations.conf").write_text(directive.sub(r"\1", text))
    assert_verifies(unit_dir / "runbookd.service")
