"""A small async client for the REST API (`/v1/...`) with an admin token; errors raise typed exceptions."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from client_sdk.errors import InternalError, SfuError, error_from_wire
from client_sdk.wire import JsonObject


class AdminClient:
    """`async with AdminClient(url, create_admin_token(key_id, secret)) as admin: ...`; one HTTP pool."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def set_token(self, token: str) -> None:
        """Admin tokens are short-lived: swap in a fresh one without a new client."""
        self._token = token

    async def _call(self, method: str, path: str, body: JsonObject | None = None) -> Any:
        raw = await self._call_raw(method, path, body)
        return None if not raw else _json(raw)

    async def _call_raw(self, method: str, path: str, body: JsonObject | None = None) -> bytes:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Authorization": f"Bearer {self._token}"}
        async with self._http.request(method, self.url + path, json=body, headers=headers) as response:
            raw = await response.read()
            if response.status >= 400:
                raise _error(response.status, raw)
            return raw

    # -- sessions -----------------------------------------------------------------------------------------

    async def list_sessions(self) -> Any:
        return await self._call("GET", "/v1/sessions")

    async def get_session(self, sid: str) -> Any:
        return await self._call("GET", f"/v1/sessions/{_q(sid)}")

    async def end_session(self, sid: str) -> Any:
        """Everyone gets `closed {reason:"session_ended"}`."""
        return await self._call("DELETE", f"/v1/sessions/{_q(sid)}")

    async def update_participant(
        self, sid: str, uid: str, *, description: JsonObject | None = None, grants: JsonObject | None = None
    ) -> Any:
        body = {k: v for k, v in {"description": description, "grants": grants}.items() if v is not None}
        return await self._call("PATCH", f"/v1/sessions/{_q(sid)}/participants/{_q(uid)}", body)

    async def kick(self, sid: str, uid: str) -> Any:
        return await self._call("DELETE", f"/v1/sessions/{_q(sid)}/participants/{_q(uid)}")

    async def mute_feed(self, sid: str, feed_id: str, muted: bool = True) -> Any:
        return await self._call("POST", f"/v1/sessions/{_q(sid)}/feeds/{_q(feed_id)}/mute", {"muted": muted})

    async def send_message(
        self,
        sid: str,
        data: Any,
        *,
        to: Sequence[str] | None = None,
        pipeline: str | None = None,
        persist: bool = False,
    ) -> Any:
        body: JsonObject = {"data": data, "persist": persist}
        if to is not None:
            body["to"] = list(to)
        if pipeline is not None:
            body["pipeline"] = pipeline
        return await self._call("POST", f"/v1/sessions/{_q(sid)}/messages", body)

    # -- recordings ---------------------------------------------------------------------------------------

    async def start_recording(self, sid: str, feed_ids: Sequence[str] | None = None) -> str:
        """Starts recording (all feeds, and new ones, when `feed_ids` is None); returns the recording id."""
        body = {} if feed_ids is None else {"feed_ids": list(feed_ids)}
        reply = await self._call("POST", f"/v1/sessions/{_q(sid)}/recordings", body)
        return str(reply["recording_id"])

    async def stop_recording(self, sid: str, recording_id: str) -> Any:
        """Files are final when this returns."""
        return await self._call("DELETE", f"/v1/sessions/{_q(sid)}/recordings/{_q(recording_id)}")

    async def list_recordings(self) -> Any:
        return await self._call("GET", "/v1/recordings")

    async def get_recording(self, recording_id: str) -> Any:
        return await self._call("GET", f"/v1/recordings/{_q(recording_id)}")

    async def download_recording_file(self, recording_id: str, name: str) -> bytes:
        return await self._call_raw("GET", f"/v1/recordings/{_q(recording_id)}/files/{_q(name)}")

    # -- keys and webhooks --------------------------------------------------------------------------------

    async def create_key(
        self,
        type: str = "secret",
        *,
        origins: Sequence[str] | None = None,
        grants: JsonObject | None = None,
        max_participants: int | None = None,
    ) -> Any:
        """A new key; its secret (or `wk_...` value) is in the reply, shown this once."""
        body: JsonObject = {"type": type}
        if origins is not None:
            body["origins"] = list(origins)
        if grants is not None:
            body["grants"] = grants
        if max_participants is not None:
            body["max_participants"] = max_participants
        return await self._call("POST", "/v1/keys", body)

    async def list_keys(self) -> Any:
        return await self._call("GET", "/v1/keys")

    async def revoke_key(self, key_id: str) -> Any:
        return await self._call("DELETE", f"/v1/keys/{_q(key_id)}")

    async def create_webhook(self, url: str, **fields: Any) -> Any:
        return await self._call("POST", "/v1/webhooks", {"url": url, **fields})

    async def list_webhooks(self) -> Any:
        return await self._call("GET", "/v1/webhooks")

    async def delete_webhook(self, webhook_id: str) -> Any:
        return await self._call("DELETE", f"/v1/webhooks/{_q(webhook_id)}")


def _q(part: str) -> str:
    return quote(part, safe="")


def _json(raw: bytes) -> Any:
    import orjson

    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InternalError("server sent a body that is not JSON") from None


def _error(status: int, raw: bytes) -> SfuError:
    """`{"error":{code,message}}` -> the typed exception; a body without it maps from the HTTP status."""
    try:
        body = _json(raw)
    except SfuError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error_from_wire(error.get("code"), error.get("message"))
    by_status = {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        409: "conflict",
        413: "too_large",
        429: "rate_limited",
        503: "unavailable",
    }
    return error_from_wire(by_status.get(status, "internal"), f"http {status}")
