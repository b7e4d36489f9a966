"""Graceful operations of `sfu serve` as a subprocess: SIGUSR1 drains (new joins refused, /healthz 503,
live sessions carry on), SIGTERM ends every session with a reconnect hint and exits within 10 s."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.integration.deploy.serve import Served, serve
from tests.support import wait_until


async def join(http: aiohttp.ClientSession, served: Served, sid: str, uid: str,
               **fields: Any) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await http.ws_connect(served.ws_url)
    join = {"type": "join", "id": 1, "token": served.token(sid, uid), **fields}
    await ws.send_str(orjson.dumps(join).decode())
    reply = orjson.loads(await ws.receive_str(timeout=10))
    return ws, reply


async def health(http: aiohttp.ClientSession, served: Served) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{served.url}/healthz") as response:
        return response.status, await response.json()


async def test_sigusr1_drains_refusing_new_joins_while_live_sessions_continue(tmp_path: Path) -> None:
    async with serve(tmp_path / "data", "--ice-host", "127.0.0.1") as served, aiohttp.ClientSession() as http:
        alice, joined = await join(http, served, "standup", "alice")
        assert joined["type"] == "joined", joined
        assert await health(http, served) == (200, {"status": "ok"})

        served.signal(signal.SIGUSR1)
        await served.wait_line("draining")
        assert await health(http, served) == (503, {"status": "draining", "sessions": 1, "participants": 1})

        bob, refused = await join(http, served, "standup", "bob")
        assert refused["type"] == "error" and refused["code"] == "conflict", refused
        assert "draining" in refused["message"]
        await bob.close()
        carol, refused = await join(http, served, "other-room", "carol")
        assert refused["code"] == "conflict"
        await carol.close()

        await alice.send_str('{"type":"ping","id":2}')
        assert orjson.loads(await alice.receive_str(timeout=5)) == {"type": "pong", "re": 2}
        await alice.send_str('{"type":"leave"}')
        await alice.close()

        async def drained() -> bool:
            return (await health(http, served))[1].get("participants") == 0

        await wait_until(drained, 10)

        served.signal(signal.SIGTERM)
        assert await served.proc.wait() == 0


async def test_sigterm_tells_participants_to_reconnect_and_exits_within_10_s(tmp_path: Path) -> None:
    async with serve(tmp_path / "data", "--ice-host", "127.0.0.1") as served, aiohttp.ClientSession() as http:
        sockets = []
        for uid in ("alice", "bob"):
            ws, joined = await join(http, served, "standup", uid)
            assert joined["type"] == "joined"
            sockets.append(ws)
        started = time.monotonic()
        served.signal(signal.SIGTERM)
        for ws in sockets:
            frames = []
            while True:
                msg = await ws.receive(timeout=10)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                frames.append(orjson.loads(msg.data))
            assert frames[-1] == {"type": "closed", "reason": "server_shutdown", "reconnect": True}, frames
            assert ws.close_code == 1001
        assert await served.proc.wait() == 0
        assert time.monotonic() - started < 10.0
        async with aiohttp.ClientSession() as after:
            try:
                await after.get(f"{served.url}/healthz")
                raise AssertionError("the server still listens after SIGTERM")
            except aiohttp.ClientConnectionError:
                pass
