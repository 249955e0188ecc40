"""moto's S3-compatible server in a separate process on loopback, for integration tests.

A real process (not moto's in-process mocks) so the code under test talks HTTP to an endpoint
like it would to MinIO or R2, with aiobotocore's real connection handling.
"""

from __future__ import annotations

import http.client
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from tests.services import missing
from tests.utils import free_port

START_TIMEOUT = 30.0  # seconds for the server to answer; a cold import of moto takes ~1s
STOP_TIMEOUT = 5.0


@contextmanager
def moto_server() -> Iterator[str]:
    """Start `python -m moto.server` on 127.0.0.1 and a free port; yield its endpoint URL.

    Skips the calling test when moto's server is not installed or does not come up. The
    process is terminated (then killed) on exit, so none is left behind.
    """
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        missing("moto's server is not installed (pip install 'moto[server]')")
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    # The log goes to a file, not a pipe: nobody reads a pipe, and a full one blocks moto.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_answering(proc, port, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            _stop(proc)


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/moto-api/")
        conn.getresponse().read()
    except OSError:
        return False
    finally:
        conn.close()
    return True


def _wait_until_answering(proc: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers(port):
        try:
            # Waits a little between attempts, and notices a server that died (port taken...).
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            if time.monotonic() < deadline:
                continue
            missing(f"moto's server did not answer within {START_TIMEOUT:g}s")
        log.seek(0)
        tail = log.read().decode(errors="replace")[-500:]
        missing(f"moto's server exited with status {proc.returncode}: {tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def enforce_auth(endpoint: str) -> None:
    """From now on the server checks every request's signature and IAM permissions.

    moto accepts any credentials by default; this is its `INITIAL_NO_AUTH_ACTION_COUNT`
    switch, set at runtime to 0 (set up users and keys before calling it).
    """
    _post(endpoint, "/moto-api/reset-auth", "0")


def _post(endpoint: str, path: str, body: str) -> None:
    host, _, port = endpoint.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("POST", path, body=body.encode())
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"moto {path} answered {resp.status}")
