"""A raw WebSocket peer for signaling tests: keeps every frame it gets, so tests can check order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from tests.support import RunningServer, wait_until


class Peer:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.raw_frames = 0
        self._next_id = 100  # join uses id 1
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.raw_frames += 1
                self.frames.append(orjson.loads(msg.data))

    @property
    def uid(self) -> str:
        return str(self.joined["participant"]["uid"])

    @property
    def joined(self) -> dict[str, Any]:
        return next(f for f in self.frames if f["type"] == "joined")

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Sends a request with a fresh id and returns its reply (the success type or `error`)."""
        self._next_id += 1
        rid = self._next_id
        await self.send({"type": kind, "id": rid, **fields})
        return await self.reply(rid)

    async def reply(self, rid: int | str, wait_s: float = 5.0) -> dict[str, Any]:
        await wait_until(lambda: any(f.get("re") == rid for f in self.frames) or self.ws.closed, wait_s)
        return next(f for f in self.frames if f.get("re") == rid)

    def of_type(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind and all(f.get(k) == v for k, v in match.items())]

    async def event(self, kind: str, wait_s: float = 5.0, **match: Any) -> dict[str, Any]:
        """The first frame of `kind` whose fields equal `match`, waiting for it if needed."""
        await wait_until(lambda: bool(self.of_type(kind, **match)), wait_s)
        return self.of_type(kind, **match)[0]

    async def closed(self, wait_s: float = 5.0) -> int | None:
        """Waits for the server to close the socket; its close code."""
        await asyncio.wait_for(asyncio.shield(self._reader), wait_s)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


Connect = Callable[..., Any]


class Peers:
    """Opens peers against one server and closes all of them at the end of a test."""

    def __init__(self, server: RunningServer, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http
        self.opened: list[Peer] = []

    async def connect(self, origin: str | None = None) -> Peer:
        headers = {"Origin": origin} if origin else None
        ws = await self.http.ws_connect(self.server.ws_url, headers=headers, autoping=True)
        peer = Peer(ws)
        self.opened.append(peer)
        return peer

    async def join(self, token: str | None = None, *, origin: str | None = None, expect: str = "joined",
                   **fields: Any) -> Peer:
        """A connected peer that sent `join` and got `expect` (`joined` or `error`) back."""
        peer = await self.connect(origin)
        frame: dict[str, Any] = {"type": "join", "id": 1, **fields}
        if token is not None:
            frame["token"] = token
        await peer.send(frame)
        reply = await peer.reply(1, wait_s=10.0)
        assert reply["type"] == expect, reply
        return peer

    async def close(self) -> None:
        for peer in self.opened:
            await peer.close()


@asynccontextmanager
async def open_peers(server: RunningServer) -> AsyncIterator[Peers]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        peers = Peers(server, http)
        try:
            yield peers
        finally:
            await peers.close()
