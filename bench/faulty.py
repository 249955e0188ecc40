"""Scenario 3's application: health endpoints that start failing at a known instant, and a
remediation endpoint that records when runbookd called it. One process, one clock.

GET /health/{i}        200 {"status": "ok"} until trial i's fault time, then 503
POST /remediate/{i}    records the arrival time of runbookd's remediation request
POST /control/faults   {"faults": {"i": epoch_seconds}} schedules the faults
GET /control/results   arrival times of health checks and remediations, per trial
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from aiohttp import web


def build_app() -> web.Application:
    faults: dict[str, float] = {}
    health: defaultdict[str, list[tuple[float, int]]] = defaultdict(list)
    remediations: defaultdict[str, list[float]] = defaultdict(list)

    async def check(request: web.Request) -> web.Response:
        now = time.time()
        trial = request.match_info["trial"]
        failing = trial in faults and now >= faults[trial]
        status = 503 if failing else 200
        health[trial].append((now, status))
        return web.json_response({"status": "down" if failing else "ok"}, status=status)

    async def remediate(request: web.Request) -> web.Response:
        remediations[request.match_info["trial"]].append(time.time())
        await request.read()
        return web.json_response({"ok": True})

    async def set_faults(request: web.Request) -> web.Response:
        body = await request.json()
        faults.update({str(k): float(v) for k, v in body["faults"].items()})
        return web.json_response({"faults": len(faults)})

    async def results(request: web.Request) -> web.Response:
        # Only what happened from a little before each fault: the first failing check and
        # the remediation are all the harness needs.
        out = {
            trial: {
                "fault": at,
                "health": [(t, s) for t, s in health[trial] if t >= at - 3.0],
                "remediations": remediations.get(trial, []),
            }
            for trial, at in faults.items()
        }
        return web.json_response(out)

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/health/{trial}", check)
    app.router.add_post("/remediate/{trial}", remediate)
    app.router.add_post("/control/faults", set_faults)
    app.router.add_get("/control/results", results)
    app.router.add_get("/control/ping", ping)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)
