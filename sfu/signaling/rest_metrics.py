"""`GET /metrics` (Prometheus text, no auth: PROTOCOL.md) and `GET /v1/stats` (the same as JSON, admin)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from sfu.metrics import Metrics
from sfu.server import SERVER_KEY
from sfu.signaling.http_util import json_response, require_admin

METRICS_KEY = web.AppKey("metrics", Metrics)


def add_routes(app: web.Application) -> None:
    """Routes plus the metrics' own lifecycle (the event-loop lag monitor runs while the app does)."""
    metrics = app[METRICS_KEY] = Metrics(app[SERVER_KEY])
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/v1/stats", stats)

    async def start(_: web.Application) -> None:
        await metrics.start()

    async def stop(_: web.Application) -> None:
        await metrics.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


async def prometheus_metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].prometheus_text()
    # NOTE: the classic 0.0.4 text format: every Prometheus version reads it (our names need no escaping)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def stats(request: web.Request) -> web.Response:
    """Server-wide counters; like every `/v1` route it needs an admin token."""
    await require_admin(request)
    return json_response(request.app[METRICS_KEY].snapshot())
