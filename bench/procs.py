"""Child processes of the benchmark: each in its own process group, always stopped.

Every process is started with `start_new_session=True` (its own session and process group,
so nginx's worker or a wrapper's children go with it) and stopped by its group id: SIGTERM,
then SIGKILL after a grace period. `Processes.stop_all()` runs in a `finally` of the harness.
Output goes to log files in the run's temp dir, never to a pipe nobody reads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"


class BenchError(RuntimeError):
    """Something the benchmark needs did not work; the message says what."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Owns every child process of a run; `stop_all` stops them in reverse start order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []
        self._logs: list[IO[bytes]] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        pipes: bool = False,
    ) -> Proc:
        """Start `argv` in its own process group. With `pipes`, stdin and stdout are pipes
        (a worker speaking JSON lines); stderr always goes to `<workdir>/<name>.log`."""
        log = self.workdir / f"{name}.log"
        # Several processes may share a name (one per trial): the log is appended to.
        out = log.open("ab")
        self._logs.append(out)
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else out,
            stderr=out,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        """SIGTERM to the process group, SIGKILL after `grace` seconds; waits for the exit."""
        if proc in self.procs:
            self.procs.remove(proc)
        _stop_group(proc.popen, grace)
        for stream in (proc.popen.stdin, proc.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc, grace=3.0)
        for out in self._logs:
            with contextlib.suppress(OSError):
                out.close()
        self._logs.clear()


def _stop_group(popen: subprocess.Popen[bytes], grace: float) -> None:
    pgid = popen.pid  # start_new_session: the child leads its own group
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace)
    # The leader may be gone while others of its group (nginx's worker) linger.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=grace)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body); a refused connection or a timeout raises OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback http
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post_json(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 - loopback http
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(url: str, proc: Proc, timeout: float, *, status: int = 200) -> float:
    """Poll `url` until it answers `status`; returns the seconds waited.

    Raises BenchError naming the process (with its log's tail) if it exits or times out.
    """
    start = time.monotonic()
    deadline = start + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            code, _ = http_get(url, timeout=1.0)
        except OSError as exc:
            last = str(exc)
        else:
            if code == status:
                return time.monotonic() - start
            last = f"HTTP {code}"
        time.sleep(0.005)
    raise BenchError(f"{proc.name}: {url} not {status} after {timeout:g}s ({last}):\n{proc.tail()}")


def run_to_end(procs: Processes, name: str, argv: Sequence[str], timeout: float) -> str:
    """Run a short-lived tool (wrk) as an owned process; its output (stdout and stderr)."""
    proc = procs.spawn(name, argv)
    try:
        proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{name} did not finish within {timeout:g}s:\n{proc.tail()}") from None
    finally:
        procs.stop(proc)
    text = proc.log.read_text(errors="replace")
    proc.log.unlink()
    if proc.popen.returncode != 0:
        raise BenchError(f"{name} exited {proc.popen.returncode}:\n{text[-2000:]}")
    return text
