"""Several `runbookd run` processes on one PostgreSQL database, for the end-to-end tests of
several replicas (tests/e2e/test_failover.py, tests/e2e/test_replicas.py).

    paths = write_replica(tmp_path / "a", dsn, REST_OF_THE_CONFIG, name="a")
    with replicas(paths) as (a,):   # started in order: the first claims the lease and leads
        ...                         # a.proc, a.port, a.log; all killed (-9) on the way out

Each process logs to a file in its directory (a pipe nobody reads would fill and block it);
`log_tail` shows the end of it in failure messages.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.paths import ROOT
from tests.utils import free_port

TTL = 2.0
HEAD = """
runbookd:
  listen: 127.0.0.1:{port}
  state_dir: {state}
  store: {{type: postgres, dsn_file: {dsn_file}, lease_ttl: {ttl}s}}
"""
STARTED = '"event": "started"'


@dataclass(frozen=True, slots=True)
class ReplicaFiles:
    name: str
    port: int
    config: Path
    log: Path


@dataclass(frozen=True, slots=True)
class Replica:
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def write_replica(
    directory: Path, dsn: str, rest: str, *, name: str, ttl: float = TTL, **values: object
) -> ReplicaFiles:
    """A replica's config in `directory`: the store and the lease, then `rest` (rules and
    remediations) formatted with `values` and `replica` (its name)."""
    directory.mkdir()
    (directory / "dsn").write_text(dsn + "\n")
    port = free_port()
    head = HEAD.format(port=port, state=directory / "state", dsn_file=directory / "dsn", ttl=ttl)
    path = directory / "runbookd.yaml"
    path.write_text(head + rest.format(replica=name, **values))
    return ReplicaFiles(name, port, path, directory / "runbookd.log")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for_log(replica: Replica, needle: str, timeout: float = 30.0) -> None:
    """Until the replica's log holds `needle`; fails at once if the process exits first."""
    deadline = time.monotonic() + timeout
    while needle not in replica.log.read_text(errors="replace"):
        if replica.proc.poll() is not None:
            raise AssertionError(
                f"replica {replica.name} exited {replica.proc.returncode} before {needle!r}:\n"
                + log_tail(replica.log)
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{needle!r} not logged by {replica.name}:\n{log_tail(replica.log)}"
            )
        time.sleep(0.05)  # a real process starting: poll its log, bounded


@contextmanager
def replica(files: ReplicaFiles) -> Iterator[Replica]:
    """`runbookd run` on `files`, once it has logged that it started; killed on the way out."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "daemon.cli", "run", "--config", str(files.config)]
    with files.log.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        started = Replica(files.name, files.port, files.log, proc)
        wait_for_log(started, STARTED)
        yield started
    finally:
        if proc.poll() is None:
            proc.kill()  # SIGKILL ends a stopped (SIGSTOP) process too
        proc.wait(timeout=15)


@contextmanager
def replicas(files: Sequence[ReplicaFiles]) -> Iterator[list[Replica]]:
    """Start each in turn (each logs "started" after its first claim of the lease, so the
    first leads); all killed on the way out, whatever happened."""
    with ExitStack() as stack:
        yield [stack.enter_context(replica(f)) for f in files]


async def role(session: aiohttp.ClientSession, replica: Replica) -> str:
    async with session.get(f"{replica.url}/readyz") as r:
        body = await r.json()
        return str(body["role"])


async def roles(session: aiohttp.ClientSession, running: Sequence[Replica]) -> list[str]:
    """Each replica's role by /readyz; "gone" for one that does not answer."""

    async def one(r: Replica) -> str:
        if r.proc.poll() is not None:
            return "gone"
        try:
            async with asyncio.timeout(1.0):
                return await role(session, r)
        except (aiohttp.ClientError, TimeoutError):
            return "gone"

    return list(await asyncio.gather(*(one(r) for r in running)))


async def query(dsn: str, sql: str, *args: Any) -> list[Any]:
    """Rows of `sql` on the replicas' database, read beside them."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()
