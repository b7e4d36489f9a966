"""REST API of recordings (PROTOCOL.md): start, stop, list, manifest, download.

Who may record: an admin JWT (signed by a secret key, which carries every right including `record`) on a
live session of its own cid. Web-only keys never reach the REST API (they cannot grant admin), so their
per-key `record` switch cannot be overridden by any token either way. Answers: `POST` 201
`{"recording_id", "state"}`; `DELETE` 200 with the recording once every file is final (idempotent: a
finished recording answers its record); `GET` the recording with `files`, one manifest entry per file:
`name, feed_id, uid, kind, codec, start_offset_ms` (from the recording's start), `started_at` (unix s),
`duration_ms, size, frames, state` (complete | recording | failed), `error, drops`. A recording's `state`
is recording | stopped | failed | interrupted (the server died while it ran: its files are readable up to
about a second before the crash, its manifest is as of the last 5 s checkpoint). A recording whose
directory cannot be created fails the `POST` with 500 `internal`; a file that cannot be written later
(disk full, unwritable) stops the recording with state `failed`: participants get `recording
{state:"failed", recording_id, error}`, webhooks `recording_failed` then `recording_finished`; the session
goes on. Simulcast feeds are recorded at their layer 0 (the receiver's head layer).
"""

from __future__ import annotations

from aiohttp import web

from sfu.auth.identity import Identity
from sfu.errors import BadRequest, Internal, NotFound
from sfu.recording.service import RecordingService, recording_wire
from sfu.server import SERVER_KEY, Server
from sfu.signaling.http_util import json_response, read_json_object, require_admin

RECORDINGS_KEY = web.AppKey("recordings", RecordingService)
MAX_FEED_IDS = 256


async def _admin(request: web.Request) -> tuple[Server, Identity, RecordingService]:
    identity = await require_admin(request)
    return request.app[SERVER_KEY], identity, request.app[RECORDINGS_KEY]


def _parse_feed_ids(body: dict[str, object]) -> tuple[str, ...] | None:
    unknown = sorted(set(body) - {"feed_ids"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}")
    raw = body.get("feed_ids")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(f, str) for f in raw) or len(raw) > MAX_FEED_IDS:
        raise BadRequest(f"feed_ids must be a list of at most {MAX_FEED_IDS} feed ids")
    return tuple(dict.fromkeys(raw))


async def start_recording(request: web.Request) -> web.StreamResponse:
    server, identity, recordings = await _admin(request)
    sid = request.match_info["sid"]
    session = server.registry.get(identity.cid, sid)
    if session is None:
        raise NotFound(f"session {sid} is not live")
    feed_ids = _parse_feed_ids(await read_json_object(request))
    try:
        recording = await recordings.start(session, feed_ids)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise Internal(f"recording directory cannot be created: {reason}") from None
    return json_response({"recording_id": recording.recording_id, "state": recording.state}, status=201)


async def stop_recording(request: web.Request) -> web.StreamResponse:
    _, identity, recordings = await _admin(request)
    match = request.match_info
    record = await recordings.stop(identity.cid, match["sid"], match["recording_id"])
    return json_response(recording_wire(record))


async def list_recordings(request: web.Request) -> web.StreamResponse:
    _, identity, recordings = await _admin(request)
    return json_response({"recordings": [recording_wire(r) for r in await recordings.list(identity.cid)]})


async def get_recording(request: web.Request) -> web.StreamResponse:
    _, identity, recordings = await _admin(request)
    record = await recordings.get(identity.cid, request.match_info["recording_id"])
    return json_response(recording_wire(record))


async def get_file(request: web.Request) -> web.StreamResponse:
    """Streams a file of the manifest (a file still being written is served as far as it is)."""
    _, identity, recordings = await _admin(request)
    record = await recordings.get(identity.cid, request.match_info["recording_id"])
    path = recordings.file_path(record, request.match_info["name"])
    if not path.is_file():
        raise NotFound(f"file {path.name} is gone")
    content_type = "video/x-matroska" if path.suffix == ".mkv" else "video/webm"
    return web.FileResponse(path, headers={"Content-Type": content_type})


def add_routes(app: web.Application) -> None:
    """Routes, plus the RecordingService: opened on startup, closed on cleanup before the server."""
    server = app[SERVER_KEY]
    service = RecordingService(server.store, server.webhooks, server.config.data_dir)
    app[RECORDINGS_KEY] = service

    async def _open(_: web.Application) -> None:
        await service.open()

    async def _close(_: web.Application) -> None:
        await service.close()

    app.on_startup.append(_open)
    # NOTE: build_app appends Server.close after the route modules, so files are final before sessions end
    app.on_cleanup.append(_close)
    router = app.router
    router.add_post("/v1/sessions/{sid}/recordings", start_recording)
    router.add_delete("/v1/sessions/{sid}/recordings/{recording_id}", stop_recording)
    router.add_get("/v1/recordings", list_recordings)
    router.add_get("/v1/recordings/{recording_id}", get_recording)
    router.add_get("/v1/recordings/{recording_id}/files/{name}", get_file)
