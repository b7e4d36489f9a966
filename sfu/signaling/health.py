"""`GET /healthz`: liveness and readiness in one answer, so a load balancer stops sending joins to a
server that is draining (rolling restart) or shutting down while its live sessions carry on."""

from __future__ import annotations

from aiohttp import web

from sfu.server import SERVER_KEY
from sfu.signaling.http_util import json_response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)


async def healthz(request: web.Request) -> web.Response:
    """200 `{"status":"ok"}`; 503 `{"status":"draining"|"shutting_down","sessions":n,"participants":n}`."""
    registry = request.app[SERVER_KEY].registry
    if not (registry.draining or registry.closed):
        return json_response({"status": "ok"})
    status = "shutting_down" if registry.closed else "draining"
    sessions, participants = len(registry.sessions_by_key), registry.participant_count
    return json_response({"status": status, "sessions": sessions, "participants": participants}, status=503)
