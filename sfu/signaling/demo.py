"""`GET /demo/config.json`: what the demo page needs to join without a token (the demo web-only key).

The key is read from `data_dir/demo-credentials.json` (written by `sfu.bootstrap`). It is only handed to a
page whose Origin (or, without one, Host) is one of the key's own origins or a loopback address, so the
key is never shown to a site that could not use it anyway.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from sfu.bootstrap import CREDENTIALS_FILE
from sfu.server import SERVER_KEY


def _read_credentials(data_dir: Path) -> dict[str, Any]:
    try:
        data = orjson.loads((data_dir / CREDENTIALS_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _page_origin(request: web.Request) -> str:
    """The page's origin: the Origin header, else this request's own scheme and Host."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return origin.rstrip("/")
    return f"{request.scheme}://{request.host}"


def origin_may_see_key(origin: str, key_origins: list[str]) -> bool:
    """Exact match with one of the key's origins, or any loopback page."""
    if origin in key_origins:
        return True
    return _is_loopback(urlsplit(origin).hostname)


async def handle_config(request: web.Request) -> web.Response:
    config = request.app[SERVER_KEY].config
    saved = _read_credentials(Path(config.data_dir))
    key = saved.get("web_key")
    origins = saved.get("origins")
    key_origins = [o for o in origins if isinstance(o, str)] if isinstance(origins, list) else []
    if not isinstance(key, str) or not origin_may_see_key(_page_origin(request), key_origins):
        key = None
    return web.json_response({"key": key}, headers={"Cache-Control": "no-store"})


async def _sdk_cors(request: web.Request, response: web.StreamResponse) -> None:
    """The browser SDK is a public ES module: pages on any origin may `import` it from this server."""
    if request.path.startswith("/sdk/"):
        response.headers["Access-Control-Allow-Origin"] = "*"


def add_routes(app: web.Application) -> None:
    """Registers `GET /demo/config.json` (before the `/demo/` static route) and CORS on `/sdk/`."""
    app.router.add_get("/demo/config.json", handle_config)
    app.on_response_prepare.append(_sdk_cors)
