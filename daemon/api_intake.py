"""Alerts pushed by other systems: the Alertmanager webhook (and Grafana's superset)."""

from __future__ import annotations

from aiohttp import web

from daemon.alerts import AlertmanagerWebhook
from daemon.api import DaemonView, read_json


def intake_routes(daemon: DaemonView) -> list[web.RouteDef]:
    async def alertmanager(request: web.Request) -> web.Response:
        body = await read_json(request, AlertmanagerWebhook)
        alerts = body.to_alerts()
        matched = await daemon.intake(alerts)
        return web.json_response({"received": len(alerts), "matched": matched})

    return [web.post("/api/v1/alerts", alertmanager)]
