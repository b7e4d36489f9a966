"""Admin REST API on live sessions and webhooks; every call is scoped to the caller's cid.

A session of another client answers 404 exactly like one that does not exist, so a client cannot even
learn which session names others use.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from sfu.auth.identity import Grants, Identity
from sfu.errors import BadRequest, Forbidden, NotFound
from sfu.server import SERVER_KEY, Server
from sfu.session.session import Session
from sfu.signaling import messages
from sfu.signaling.http_util import json_response, read_json_object, require_admin
from sfu.store.base import WebhookRecord

MAX_DESCRIPTION_BYTES = 4096
MAX_URL_CHARS = 2048


async def _admin(request: web.Request) -> tuple[Server, Identity]:
    identity = await require_admin(request)
    return request.app[SERVER_KEY], identity


async def _session(request: web.Request) -> tuple[Server, Identity, Session]:
    server, identity = await _admin(request)
    sid = request.match_info["sid"]
    session = server.registry.get(identity.cid, sid)
    if session is None:
        raise NotFound(f"session {sid} is not live")
    return server, identity, session


async def list_sessions(request: web.Request) -> web.StreamResponse:
    server, identity = await _admin(request)
    return json_response({"sessions": [s.to_wire() for s in server.registry.list(identity.cid)]})


async def get_session(request: web.Request) -> web.StreamResponse:
    _, _, session = await _session(request)
    return json_response(session.to_wire())


async def end_session(request: web.Request) -> web.StreamResponse:
    _, _, session = await _session(request)
    await session.end("session_ended", 4012)
    return web.Response(status=204)


def _parse_description(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequest("description must be an object")
    if len(orjson.dumps(raw)) > MAX_DESCRIPTION_BYTES:
        raise BadRequest(f"description is larger than {MAX_DESCRIPTION_BYTES} bytes")
    return raw


async def patch_participant(request: web.Request) -> web.StreamResponse:
    """Changes description, grants (merged into the current ones) and name of a participant live."""
    _, _, session = await _session(request)
    participant = session.participant(request.match_info["uid"])
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"description", "grants", "name"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}")
    description = _parse_description(body["description"]) if "description" in body else None
    grants = Grants.from_wire(body["grants"], base=participant.grants) if "grants" in body else None
    if grants is not None and grants.admin:
        raise Forbidden("admin cannot be granted to a participant")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > messages.MAX_NAME_CHARS):
        raise BadRequest(f"name must be a string of at most {messages.MAX_NAME_CHARS} characters")
    session.update_participant(participant, name=name, description=description, grants=grants)
    return json_response(participant.to_wire(with_grants=True))


async def kick_participant(request: web.Request) -> web.StreamResponse:
    _, _, session = await _session(request)
    participant = session.participant(request.match_info["uid"])
    await session.remove_participant(participant, "kicked", 4011)
    return web.Response(status=204)


async def mute_feed(request: web.Request) -> web.StreamResponse:
    _, _, session = await _session(request)
    body = await read_json_object(request)
    muted = body.get("muted", True)
    if not isinstance(muted, bool):
        raise BadRequest("muted must be a boolean")
    feed_id = request.match_info["feed_id"]
    if feed_id not in session.feeds_by_id:
        raise NotFound(f"feed {feed_id} is not in the session")
    if session.media is not None:
        session.media.set_feed_muted(feed_id, muted)  # updates the feed and pauses its receiver
    else:
        session.update_feed(feed_id, muted=muted)
    return json_response(session.feeds_by_id[feed_id].to_wire())


async def post_message(request: web.Request) -> web.StreamResponse:
    """A data message from the server (`from` = "server"); no policy applies, `to` must exist."""
    _, _, session = await _session(request)
    body = await read_json_object(request)
    send = messages.parse_send(body)
    seq = await session.pipelines.send(messages.SERVER_UID, None, send.data, to=send.to,
                                       pipeline=send.pipeline, persist=send.persist)
    return json_response({"seq": seq})


def _check_url(raw: object) -> str:
    if not isinstance(raw, str) or len(raw) > MAX_URL_CHARS:
        raise BadRequest(f"url must be a string of at most {MAX_URL_CHARS} characters")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("url must be an http or https url")
    return raw


async def add_webhook(request: web.Request) -> web.StreamResponse:
    """Registers a URL; deliveries are signed with the secret of the key that signed this admin token."""
    server, identity = await _admin(request)
    body = await read_json_object(request)
    record = await server.store.add_webhook(identity.cid, _check_url(body.get("url")), identity.key_id)
    return json_response(_webhook_wire(record), status=201)


async def list_webhooks(request: web.Request) -> web.StreamResponse:
    server, identity = await _admin(request)
    records = await server.store.list_webhooks(identity.cid)
    return json_response({"webhooks": [_webhook_wire(r) for r in records]})


async def delete_webhook(request: web.Request) -> web.StreamResponse:
    server, identity = await _admin(request)
    webhook_id = request.match_info["webhook_id"]
    if not await server.store.delete_webhook(identity.cid, webhook_id):
        raise NotFound(f"webhook {webhook_id} does not exist")
    return web.Response(status=204)


def _webhook_wire(record: WebhookRecord) -> dict[str, Any]:
    return {"webhook_id": record.webhook_id, "url": record.url, "key_id": record.key_id,
            "created_at": record.created_at}


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/sessions", list_sessions)
    router.add_get("/v1/sessions/{sid}", get_session)
    router.add_delete("/v1/sessions/{sid}", end_session)
    router.add_patch("/v1/sessions/{sid}/participants/{uid}", patch_participant)
    router.add_delete("/v1/sessions/{sid}/participants/{uid}", kick_participant)
    router.add_post("/v1/sessions/{sid}/feeds/{feed_id}/mute", mute_feed)
    router.add_post("/v1/sessions/{sid}/messages", post_message)
    router.add_post("/v1/webhooks", add_webhook)
    router.add_get("/v1/webhooks", list_webhooks)
    router.add_delete("/v1/webhooks/{webhook_id}", delete_webhook)
