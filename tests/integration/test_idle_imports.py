"""What `runbookd run` leaves unimported when nobody asks for it: the API client and output of
the commands that talk to a daemon, and the OpenAPI spec (loaded on GET /api/v1/openapi.json).
Deterministic: the modules a started daemon holds, not its RSS (bench/README.md, scenario 4)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daemon.api import operator

NOT_AT_IDLE = ("daemon.api.openapi", "daemon.cli.client", "daemon.cli.output")

PROBE = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from daemon.cli.main import _parser
    args = _parser().parse_args(["run", "--config", sys.argv[1]])
    from daemon.config.loader import load_config
    from daemon.runtime.daemon import Daemon

    async def started() -> None:
        daemon = Daemon(load_config(Path(args.config)), config_path=Path(args.config))
        await daemon.start()
        await daemon.stop()

    asyncio.run(started())
    print(json.dumps(sorted(sys.modules)))
    """
)


def test_a_started_daemon_leaves_the_cli_client_and_openapi_unimported(tmp_path: Path) -> None:
    config = tmp_path / "runbookd.yaml"
    config.write_text(
        f"runbookd:\n  listen: 127.0.0.1:0\n  state_dir: {tmp_path / 'state'}\n"
        "checks: {}\nrules: {}\nremediations: {}\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "daemon.runtime.daemon" in modules  # the probe did start a daemon
    assert modules.isdisjoint(NOT_AT_IDLE), sorted(modules.intersection(NOT_AT_IDLE))


@pytest.mark.parametrize("module", NOT_AT_IDLE)
def test_the_lazily_imported_modules_import(module: str) -> None:
    __import__(module)


async def test_the_openapi_handler_imports_its_module_on_first_use() -> None:
    """The handler the route table holds serves the spec (the module loads on the call)."""
    from aiohttp.test_utils import make_mocked_request

    handler = operator.serve_openapi
    response = await handler(make_mocked_request("GET", "/api/v1/openapi.json"))
    assert response.status == 200
    assert json.loads(response.body)["openapi"].startswith("3.")  # type: ignore[arg-type]
