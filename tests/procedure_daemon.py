"""A procedure file shipped in config/procedures/ run by a real runbookd process: the file as
shipped, with only its endpoints pointed at loopback stand-ins (named in each test) and its
state kept in a temporary directory; every log line the process writes goes to a file, and
every API answer is kept, for the tests to search."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.paths import ROOT
from tests.utils import free_port, stop_process

PROCEDURES = ROOT / "config" / "procedures"
START_WITHIN = 20.0


def shipped(name: str, changes: dict[str, Any]) -> dict[str, Any]:
    """The config of config/procedures/NAME with `changes` (a dotted path, list items by
    index, -> its new value) applied; a path the file does not have is refused, so a change
    never adds what the shipped file lacks (except a key of an entry it has)."""
    doc: dict[str, Any] = yaml.safe_load((PROCEDURES / name).read_text())
    for path, value in changes.items():
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        assert isinstance(node, dict), path
        node[last] = value
    return doc


def credentials(directory: Path, values: dict[str, str]) -> Path:
    """Files named runbookd_NAME, as systemd's LoadCredential= hands them over."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (directory / f"runbookd_{name}").write_text(value + "\n")
    return directory


@dataclass
class Runbookd:
    url: str
    log: Path
    state: Path
    session: aiohttp.ClientSession
    process: asyncio.subprocess.Process
    answers: list[bytes] = field(default_factory=list)

    async def kill(self) -> None:
        """kill -9: nothing runs on the way out."""
        self.process.kill()
        await self.process.wait()

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        async with self.session.request(method, f"{self.url}/api/v1/{path}", json=body) as r:
            raw = await r.read()
            self.answers.append(raw)
            return r.status, json.loads(raw) if raw else None

    async def start(self, procedure: str, params: dict[str, str] | None = None) -> str:
        """A run started (once its preconditions' checks have had a first run)."""
        body = {"params": params or {}, "by": "ana"}
        deadline = time.monotonic() + 10
        while True:
            status, answer = await self.call("post", f"procedures/{procedure}/runs", body)
            if status == 201:
                run_id: str = answer["id"]
                return run_id
            assert "has not run yet" in answer["error"], (status, answer)
            assert time.monotonic() < deadline, answer
            await asyncio.sleep(0.1)

    async def run(self, run_id: str) -> dict[str, Any]:
        status, run = await self.call("get", f"procedure-runs/{run_id}")
        assert status == 200, run
        result: dict[str, Any] = run
        return result

    async def at_step(self, run_id: str, step: str, within: float = 20.0) -> dict[str, Any]:
        """The run once `step` is running (bounded)."""
        deadline = time.monotonic() + within
        while True:
            run = await self.run(run_id)
            if any(s["name"] == step and s["status"] == "running" for s in run["steps"]):
                return run
            assert run["ended_at"] is None, run
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.05)

    async def ended(self, run_id: str, within: float = 25.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while (run := await self.run(run_id))["ended_at"] is None:
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.05)
        return run

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def environment(extra: dict[str, str]) -> dict[str, str]:
    env = os.environ | extra | {"PYTHONUNBUFFERED": "1"}
    # Credentials come through the config only.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return env


@asynccontextmanager
async def runbookd(
    config: dict[str, Any], directory: Path, env: dict[str, str]
) -> AsyncIterator[Runbookd]:
    """`runbookd run` on `config` (its listen address and state directory set here); run
    again on the same directory, it carries on from the state a previous one left."""
    port = free_port()
    config["runbookd"] |= {"listen": f"127.0.0.1:{port}", "state_dir": str(directory / "state")}
    path = directory / "runbookd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = directory / "runbookd.log"
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon.cli",
            "run",
            "-c",
            str(path),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=environment(env),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            deadline = time.monotonic() + START_WITHIN
            while True:
                assert proc.returncode is None, log.read_text(errors="replace")
                try:
                    async with session.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                await asyncio.sleep(0.05)
            yield Runbookd(url, log, directory / "state", session, proc)
    finally:
        await stop_process(proc)


def state_files(state: Path) -> dict[str, bytes]:
    """Everything runbookd wrote in its state directory, by name."""
    return {str(p): p.read_bytes() for p in state.rglob("*") if p.is_file()}
