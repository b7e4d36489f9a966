"""Graceful operations of `sfu serve` as a subprocess: SIGUSR1 drains (new joins refused, /healthz 503,
live sessions carry on), SIGTERM ends every session with a reconnect hint and exits within 10 s."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

import client_sdk
from sfu.auth.tokens import create_token
from sfu.store.sqlite import SqliteStore
from tests.integration.deploy.serve import Served, serve
from tests.integration.sdk.test_media import ColorBars
from tests.integration.test_cli import clean_env, sfu
from tests.support import RunningServer, wait_until


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
        env = clean_env(SFU_PORT=str(served.port))
        assert (await sfu("health", env=env)).code == 0

        served.signal(signal.SIGUSR1)
        await served.wait_line("draining")
        assert await health(http, served) == (503, {"status": "draining", "sessions": 1, "participants": 1})
        alive, ready = await sfu("health", env=env), await sfu("health", "--ready", env=env)
        assert (alive.code, alive.out, ready.code) == (0, "503 draining\n", 1), (alive, ready)

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


async def test_sigterm_finalizes_a_running_recording_before_exiting(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with serve(data_dir, "--ice-host", "127.0.0.1") as served, aiohttp.ClientSession() as http:
        alice = await client_sdk.connect(served.url, token=served.token("room", "alice"), reconnect=False)
        try:
            await alice.publish(ColorBars())
            admin = create_token(key_id=served.key_id, secret=served.secret, sid=None, uid=None,
                                 grants={"admin": True})
            headers = {"Authorization": f"Bearer {admin}"}
            async with http.post(f"{served.url}/v1/sessions/room/recordings", json={}, headers=headers) as r:
                assert r.status in (200, 201), await r.text()
                recording_id = (await r.json())["recording_id"]

            async def has_a_file() -> bool:
                async with http.get(f"{served.url}/v1/recordings/{recording_id}", headers=headers) as r:
                    return bool((await r.json()).get("files"))

            await wait_until(has_a_file, 15)
            await asyncio.sleep(1.0)  # a second of video in the file
            started = time.monotonic()
            served.signal(signal.SIGTERM)
            assert await served.proc.wait() == 0
            assert time.monotonic() - started < 10.0
        finally:
            await alice.close()
    store = SqliteStore(data_dir)
    await store.open()
    try:
        [record] = [r for c in await store.list_clients() for r in await store.list_recordings(c.cid)]
    finally:
        await store.close()
    assert record.recording_id == recording_id and record.state != "recording", record
    assert record.files and all(f["state"] == "complete" and f["frames"] > 0 for f in record.files), record


async def test_while_draining_a_dropped_participant_may_still_resume(server: RunningServer) -> None:
    creds = await server.credentials()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws_url)
        first = {"type": "join", "id": 1, "token": creds.token("room", "alice")}
        await ws.send_str(orjson.dumps(first).decode())
        joined = orjson.loads(await ws.receive_str(timeout=5))
        await ws.close()  # dropped, not left: alice waits for a resume
        server.server.registry.drain()
        again = await http.ws_connect(server.ws_url)
        join = {**first, "resume": joined["resume"]}
        await again.send_str(orjson.dumps(join).decode())
        resumed = orjson.loads(await again.receive_str(timeout=5))
        assert resumed["type"] == "joined" and resumed["resumed"] is True, resumed
        forged = {**join, "resume": "not-a-token"}
        other = await http.ws_connect(server.ws_url)
        await other.send_str(orjson.dumps(forged).decode())
        refused = orjson.loads(await other.receive_str(timeout=5))
        assert refused["code"] == "conflict", refused
        await other.close()
        await again.send_str('{"type":"leave"}')
        await again.close()


async def test_sfu_health_fails_with_one_line_when_nothing_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await sfu("health", "--url", f"http://127.0.0.1:{port}/healthz")
    assert result.code == 1 and result.err.startswith("sfu: error: http://127.0.0.1:") and result.out == ""
    assert result.err.count("\n") == 1
