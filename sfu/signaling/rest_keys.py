"""REST for keys (`/v1/keys`), scoped to the admin token's cid; `/healthz` is in health.py."""

from __future__ import annotations

from aiohttp import web

from sfu.auth.identity import Grants
from sfu.errors import BadRequest, NotFound
from sfu.server import SERVER_KEY
from sfu.signaling.http_util import json_response, read_json_object, require_admin

KEY_FIELDS = {"type", "origins", "grants", "max_participants", "algorithm", "public_key"}


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/keys", create_key)
    app.router.add_get("/v1/keys", list_keys)
    app.router.add_delete("/v1/keys/{key_id}", revoke_key)


async def create_key(request: web.Request) -> web.Response:
    """`{"type":"secret"|"web_only",...}` -> the key record plus its value, shown this once."""
    identity = await require_admin(request)
    body = await read_json_object(request)
    unknown = sorted(set(body) - KEY_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}")
    store = request.app[SERVER_KEY].store
    kind = body.get("type", "secret")
    if kind == "secret":
        if "origins" in body or "grants" in body or "max_participants" in body:
            raise BadRequest("origins, grants and max_participants apply to web_only keys")
        algorithm = body.get("algorithm", "HS256")
        public_key = body.get("public_key")
        if algorithm not in ("HS256", "ES256", "EdDSA"):
            raise BadRequest("algorithm must be HS256, ES256 or EdDSA")
        if public_key is not None and not isinstance(public_key, str):
            raise BadRequest("public_key must be a PEM string")
        record, value = await store.create_secret_key(identity.cid, algorithm, public_key)
    elif kind == "web_only":
        if "algorithm" in body or "public_key" in body:
            raise BadRequest("algorithm and public_key apply to secret keys")
        origins = body.get("origins")
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise BadRequest("origins must be a list of strings")
        grants = Grants.from_wire(body.get("grants"))
        max_participants = body.get("max_participants")
        if max_participants is not None and (type(max_participants) is not int or max_participants < 1):
            raise BadRequest("max_participants must be a positive integer")
        record, value = await store.create_web_key(identity.cid, tuple(origins), grants, max_participants)
    else:
        raise BadRequest('type must be "secret" or "web_only"')
    out = {**record.to_wire(), "secret": value}
    if record.type == "web_only":
        out["key"] = value
    return json_response(out, status=201)


async def list_keys(request: web.Request) -> web.Response:
    identity = await require_admin(request)
    keys = await request.app[SERVER_KEY].store.list_keys(identity.cid)
    return json_response({"keys": [key.to_wire() for key in keys]})


async def revoke_key(request: web.Request) -> web.Response:
    """Revokes at once; another client's key answers not_found, as if it did not exist."""
    identity = await require_admin(request)
    store = request.app[SERVER_KEY].store
    key_id = request.match_info["key_id"]
    record = await store.get_key(key_id)
    if record is None or record.cid != identity.cid:
        raise NotFound(f"key {key_id!r} not found")
    await store.revoke_key(key_id)
    return json_response({"key_id": key_id, "revoked": True})
