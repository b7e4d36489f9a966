"""Shared pieces of the REST API: the PROTOCOL.md error shape and admin bearer authentication."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from sfu.auth.identity import Identity
from sfu.errors import BadRequest, SfuError
from sfu.server import SERVER_KEY

log = logging.getLogger("sfu.rest")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(exc: SfuError) -> web.Response:
    return json_response({"error": exc.to_wire()}, status=exc.http_status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns SfuError into `{"error":{code,message}}`; anything unexpected is logged and answered 500."""
    try:
        return await handler(request)
    except SfuError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/v1/") and exc.status != 101:
            code = {404: "not_found", 405: "bad_request", 413: "too_large"}.get(exc.status, "bad_request")
            return json_response({"error": {"code": code, "message": exc.reason.lower()}}, exc.status)
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_response({"error": {"code": "internal", "message": "internal error"}}, 500)


async def require_admin(request: web.Request) -> Identity:
    """The caller's admin identity from `Authorization: Bearer <admin jwt>`; raises Unauthorized/Forbidden."""
    server = request.app[SERVER_KEY]
    return await server.auth.verify_admin(request.headers.get("Authorization"))


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or BadRequest naming what is wrong."""
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body
