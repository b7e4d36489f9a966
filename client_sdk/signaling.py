"""One signaling WebSocket: request ids matched to replies by `re`, events handed to the owner, pings.

The owner (`Session`) gets every message without a known `re` through `on_message`, in arrival order,
and `on_closed(code)` exactly once when the socket is gone for whatever reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from client_sdk.errors import ConnectionClosed, RequestTimeout, error_from_wire
from client_sdk.wire import JsonObject

log = logging.getLogger("client_sdk.signaling")

RTC_PATH = "/v1/rtc"


def rtc_url(url: str) -> str:
    """`http(s)://host:port[/prefix]` (or already ws(s)://) -> the `ws(s)://.../v1/rtc` endpoint."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"url must start with http://, https://, ws:// or wss://, not {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(RTC_PATH):
        path += RTC_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class Connection:
    """A joined-or-joining socket; `request` sends with a fresh id and awaits the matching reply."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        http: aiohttp.ClientSession,
        on_message: Callable[[JsonObject], None],
        on_closed: Callable[[int | None], None],
        request_timeout_s: float,
        ping_interval_s: float,
    ) -> None:
        self._ws = ws
        self._http = http
        self._on_message = on_message
        self._on_closed = on_closed
        self._request_timeout_s = request_timeout_s
        self._ping_interval_s = ping_interval_s
        self._ids = itertools.count(1)
        self._pending_by_id: dict[int, asyncio.Future[JsonObject]] = {}
        self._closed = False
        self.close_code: int | None = None
        self._reader = asyncio.create_task(self._read_loop(), name="client_sdk.read")
        self._pinger = asyncio.create_task(self._ping_loop(), name="client_sdk.ping")

    @classmethod
    async def open(
        cls,
        url: str,
        on_message: Callable[[JsonObject], None],
        on_closed: Callable[[int | None], None],
        *,
        origin: str | None = None,
        request_timeout_s: float = 10.0,
        ping_interval_s: float = 10.0,
    ) -> Connection:
        """Connects the WebSocket (raises aiohttp/OS errors as they are: the caller decides on retries)."""
        headers = {"Origin": origin} if origin else {}
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(
                rtc_url(url), headers=headers, heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=2.0)
            )
        except BaseException:
            await http.close()
            raise
        return cls(ws, http, on_message, on_closed, request_timeout_s, ping_interval_s)

    @property
    def closed(self) -> bool:
        return self._closed

    async def request(self, kind: str, timeout_s: float | None = None, **fields: Any) -> JsonObject:
        """Sends `{"type": kind, "id": n, **fields}`; returns the reply or raises its typed error."""
        if self._closed:
            raise ConnectionClosed("connection is closed")
        request_id = next(self._ids)
        future: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._pending_by_id[request_id] = future
        try:
            await self.send({"type": kind, "id": request_id, **fields})
            async with asyncio.timeout(timeout_s if timeout_s is not None else self._request_timeout_s):
                return await future
        except TimeoutError:
            raise RequestTimeout(f"no reply to {kind} within the timeout") from None
        finally:
            self._pending_by_id.pop(request_id, None)

    async def send(self, message: JsonObject) -> None:
        """Sends one frame without waiting for a reply (answers, candidates, leave)."""
        if self._closed:
            raise ConnectionClosed("connection is closed")
        try:
            await self._ws.send_str(orjson.dumps(message).decode())
        except (ConnectionError, RuntimeError) as exc:
            raise ConnectionClosed(f"socket failed: {exc}") from None

    async def close(self, code: int = 1000) -> None:
        """Closes the socket and waits for the reader; `on_closed` runs once. Idempotent."""
        with contextlib.suppress(Exception):
            await self._ws.close(code=code)
        await self._shutdown()

    async def _shutdown(self) -> None:
        for task in (self._pinger, self._reader):
            if task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._http.close()
        self._finish()

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_code = self._ws.close_code
        for future in self._pending_by_id.values():
            if not future.done():
                future.set_exception(ConnectionClosed("connection closed before the reply"))
        self._pending_by_id.clear()
        self._on_closed(self.close_code)

    async def _read_loop(self) -> None:
        try:
            async for frame in self._ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    self._dispatch(frame.data)
                elif frame.type == aiohttp.WSMsgType.ERROR:
                    break
        except (TimeoutError, ConnectionError, aiohttp.ClientError) as exc:
            log.debug("socket read failed: %s", exc)
        finally:
            self._pinger.cancel()
            self._finish()

    def _dispatch(self, text: str) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            log.warning("server sent a frame that is not JSON")
            return
        if not isinstance(message, dict):
            return
        reply_to = message.get("re")
        future = self._pending_by_id.get(reply_to) if isinstance(reply_to, int) else None
        if future is None:
            if reply_to is None:
                self._on_message(message)
            return
        if future.done():
            return
        if message.get("type") == "error":
            future.set_exception(error_from_wire(message.get("code"), message.get("message")))
        else:
            future.set_result(message)

    async def _ping_loop(self) -> None:
        """The server closes a socket silent for 30 s; a missing pong means the path is dead."""
        while True:
            await asyncio.sleep(self._ping_interval_s)
            try:
                await self.request("ping")
            except RequestTimeout:
                log.info("no pong: closing the socket to reconnect")
                with contextlib.suppress(Exception):
                    await self._ws.close(code=4000)
                return
            except ConnectionClosed:
                return
