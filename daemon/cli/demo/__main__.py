"""`python -m daemon.cli.demo [PORT]`: the demo application alone, on 127.0.0.1:PORT (default
3000), with steady traffic of its own, to try a config against until Ctrl-C:

    APP_URL=http://127.0.0.1:3000 runbookd once -c config/examples/docker-compose.yaml

`curl -X POST -d '{"version": "v2-bad"}' http://127.0.0.1:3000/admin/deploy` makes every fifth
request fail; `.../admin/rollback` undoes it.
"""

from __future__ import annotations

import contextlib
import sys

import aiohttp

from daemon.api.servers import start_site
from daemon.cli.demo.app import DemoApp
from daemon.cli.demo.run import TRAFFIC_PER_SECOND, traffic
from daemon.runtime.eventloop import run as run_on_loop

DEFAULT_PORT = 3000


async def serve_app(port: int) -> None:
    runner, port = await start_site(DemoApp().app, "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    print(f"demo application on {url}, {TRAFFIC_PER_SECOND} req/s to /api/tasks", flush=True)
    try:
        async with aiohttp.ClientSession() as session:
            await traffic(session, f"{url}/api/tasks")
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and not argv[0].isdigit()):
        print("usage: python -m daemon.cli.demo [PORT]", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        run_on_loop(serve_app(int(argv[0]) if argv else DEFAULT_PORT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
