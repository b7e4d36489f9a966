"""build_app() wires the HTTP/WebSocket front end to one Server."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from sfu.config import Config
from sfu.server import SERVER_KEY, Server
from sfu.signaling import demo, health, rest_keys, rest_metrics, rest_recordings, rest_sessions, ws
from sfu.signaling.forwarded import forwarded_middleware
from sfu.signaling.http_util import error_middleware
from sfu.signaling.media_handlers import media_dispatcher
from sfu.store.base import Store

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"


async def build_app(config: Config, store: Store | None = None) -> web.Application:
    """An aiohttp app with the server started on startup and closed on cleanup."""
    middlewares: list[Middleware] = [error_middleware]
    if config.trusted_proxies:
        middlewares.insert(0, forwarded_middleware(config.trusted_proxies))
    app = web.Application(client_max_size=1024 * 1024, middlewares=middlewares)
    server = await Server.create(config, store)
    app[SERVER_KEY] = server
    health.add_routes(app)
    rest_keys.add_routes(app)
    rest_sessions.add_routes(app)
    rest_recordings.add_routes(app)
    rest_metrics.add_routes(app)
    ws.add_routes(app, media_dispatcher())
    demo.add_routes(app)
    _add_static_routes(app, config.web_root or WEB_ROOT)

    async def _close(_: web.Application) -> None:
        await server.close()

    app.on_cleanup.append(_close)
    return app


def _add_static_routes(app: web.Application, web_root: Path) -> None:
    demo = web_root / "demo"
    sdk = web_root / "sdk"

    async def index(_: web.Request) -> web.StreamResponse:
        page = demo / "index.html"
        if page.is_file():
            return web.FileResponse(page)
        return web.Response(
            text="sfu is running. The demo conferencing page is not built yet (see README status table).\n"
        )

    app.router.add_get("/", index)
    if demo.is_dir():
        app.router.add_static("/demo/", demo)
    if sdk.is_dir():
        app.router.add_static("/sdk/", sdk)
