"""`sfu serve --workers 2` as a subprocess: placement on workers, media through them, a worker killed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import orjson
import pytest

import client_sdk
from client_sdk import Reconnected, Reconnecting, RequestTimeout
from sfu.auth.tokens import create_token
from tests.integration.deploy.serve import Served, serve
from tests.integration.sdk.test_media import ColorBars
from tests.support import wait_until

CROWD = 110


def admin_headers(served: Served) -> dict[str, str]:
    token = create_token(key_id=served.key_id, secret=served.secret, sid=None, uid=None,
                         grants={"admin": True})
    return {"Authorization": f"Bearer {token}"}


async def workers(http: aiohttp.ClientSession, served: Served) -> list[dict[str, Any]]:
    async with http.get(f"{served.url}/v1/cluster/workers", headers=admin_headers(served)) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    result: list[dict[str, Any]] = body["workers"]
    return result


async def worker_of(http: aiohttp.ClientSession, served: Served, sid: str) -> dict[str, Any] | None:
    return next((w for w in await workers(http, served) if sid in w["sessions"]), None)


async def placed(http: aiohttp.ClientSession, served: Served, sid: str) -> bool:
    return await worker_of(http, served, sid) is not None


async def frames_within(remote: client_sdk.RemoteFeed, timeout_s: float) -> int:
    """Video frames decoded from `remote` (its current track) within `timeout_s`, at least one or fail."""
    count = 0
    deadline = time.monotonic() + timeout_s
    async with asyncio.timeout(timeout_s + 5):
        while time.monotonic() < deadline:
            frame = await remote.track.recv()
            assert isinstance(frame, av.VideoFrame)
            count += 1
    return count


async def file_size(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> bool:
    async with http.get(url, headers=headers) as response:
        return response.status == 200 and len(await response.read()) >= 4


class Room:
    """A publisher and a subscriber (auto_subscribe off) in one session, through the front."""

    def __init__(self, served: Served, sid: str) -> None:
        self.served, self.sid = served, sid
        self.opened: list[client_sdk.Session] = []

    async def start(self) -> None:
        url = self.served.url
        self.viewer = await client_sdk.connect(url, token=self.served.token(self.sid, "viewer"),
                                               auto_subscribe=False)
        self.publisher = await client_sdk.connect(url, token=self.served.token(self.sid, "cam"))
        self.opened = [self.viewer, self.publisher]
        self.video = await self.publisher.publish(ColorBars())
        await wait_until(lambda: self.video.feed_id in self.viewer.feeds_by_id, 10)
        assert self.video.feed_id is not None
        self.remote = await self.viewer.subscribe(self.video.feed_id)

    async def close(self) -> None:
        for session in self.opened:
            await session.close()


async def test_sessions_spread_over_workers_and_a_killed_worker_comes_back(tmp_path: Path) -> None:
    async with (serve(tmp_path / "data", "--workers", "2", "--ice-host", "127.0.0.1") as served,
                aiohttp.ClientSession() as http):
        first, second = Room(served, "first"), Room(served, "second")
        try:
            await first.start()
            await wait_until(lambda: placed(http, served, "first"), 5)
            await second.start()
            await wait_until(lambda: placed(http, served, "second"), 5)
            home_first = await worker_of(http, served, "first")
            home_second = await worker_of(http, served, "second")
            assert home_first is not None and home_second is not None
            assert home_first["worker"] != home_second["worker"], await workers(http, served)
            assert await frames_within(first.remote, 1.0) > 0
            assert await frames_within(second.remote, 1.0) > 0

            # /metrics sums the workers: four participants, two on each
            async with http.get(f"{served.url}/metrics") as response:
                text = await response.text()
            assert "sfu_participants 4\n" in text, text
            assert "sfu_cluster_workers 2\n" in text
            assert 'sfu_cluster_worker_participants{worker="0"} 2.0' in text, text

            # kill -9 the first session's worker: the second session does not notice
            second_events = second.viewer.events()
            first_events = first.viewer.events()
            publisher_events = first.publisher.events()
            old_feed_id = first.video.feed_id
            killed_at = time.monotonic()
            os.kill(home_first["pid"], signal.SIGKILL)
            assert await frames_within(second.remote, 3.0) > 10
            with pytest.raises(RequestTimeout):
                await second_events.next(Reconnecting, timeout_s=0.1)

            # the first session's participants come back within 10 s (a fresh join: the session was lost)
            assert (await first_events.next(Reconnected, timeout_s=10)).resumed is False
            assert (await publisher_events.next(Reconnected, timeout_s=10)).resumed is False
            assert time.monotonic() - killed_at < 10.0
            await wait_until(lambda: first.video.feed_id != old_feed_id
                             and first.video.feed_id in first.viewer.feeds_by_id, 10)
            assert first.video.feed_id is not None
            first.remote = await first.viewer.subscribe(first.video.feed_id)
            assert await frames_within(first.remote, 1.0) > 0
            home_second_after = await worker_of(http, served, "second")
            assert home_second_after is not None and home_second_after["pid"] == home_second["pid"]

            # the killed worker is restarted
            async def restarted() -> bool:
                killed = next(w for w in await workers(http, served) if w["worker"] == home_first["worker"])
                renewed = killed["pid"] != home_first["pid"]
                return bool(killed["alive"] and killed["restarts"] == 1 and renewed)

            await wait_until(restarted, 30, interval=0.5)

            # REST about a live session reaches its worker: a recording of the second session, its file
            # streamed through the front while being written
            admin = admin_headers(served)
            async with http.post(f"{served.url}/v1/sessions/second/recordings", json={}, headers=admin) as r:
                assert r.status == 201, await r.text()
                recording_id = (await r.json())["recording_id"]
            recording_url = f"{served.url}/v1/recordings/{recording_id}"

            async def has_a_file() -> bool:
                async with http.get(recording_url, headers=admin) as r:
                    return r.status == 200 and bool((await r.json()).get("files"))

            await wait_until(has_a_file, 15)
            async with http.get(recording_url, headers=admin) as r:
                name = (await r.json())["files"][0]["name"]
            await wait_until(lambda: file_size(http, f"{recording_url}/files/{name}", admin), 15)
            async with http.get(f"{recording_url}/files/{name}", headers=admin) as r:
                assert r.status == 200 and (await r.content.read(4)) == b"\x1a\x45\xdf\xa3"  # EBML
            async with http.delete(f"{served.url}/v1/sessions/second/recordings/{recording_id}",
                                   headers=admin) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["state"] == "stopped"
            async with http.get(f"{served.url}/healthz") as response:
                assert response.status == 200 and await response.json() == {"status": "ok"}
        finally:
            await first.close()
            await second.close()
        served.signal(signal.SIGTERM)
        assert await served.proc.wait() == 0


async def test_a_dropped_socket_resumes_on_its_worker_and_web_keys_see_the_origin(tmp_path: Path) -> None:
    """The front remembers the placement, so a resume reaches the worker holding the participant; the
    worker checks a web-only key against the Origin the browser sent to the front."""
    async with (serve(tmp_path / "data", "--workers", "2") as served, aiohttp.ClientSession() as http):
        web_key = re.search(r"key=(wk_\S+)", served.output[0])
        assert web_key is not None
        origin = {"Origin": served.url}
        ws = await http.ws_connect(served.ws_url, headers=origin)
        join = {"type": "join", "id": 1, "key": web_key.group(1), "session": "desk", "uid": "ann"}
        await ws.send_str(orjson.dumps(join).decode())
        joined = orjson.loads(await ws.receive_str(timeout=10))
        assert joined["type"] == "joined" and joined["resumed"] is False, joined

        refused = await http.ws_connect(served.ws_url, headers={"Origin": "https://elsewhere.example"})
        await refused.send_str(orjson.dumps({**join, "uid": "eve"}).decode())
        error = orjson.loads(await refused.receive_str(timeout=10))
        assert error["type"] == "error" and error["code"] in ("forbidden", "unauthorized"), error
        await refused.close()

        ws._response.connection.transport.abort()  # type: ignore[union-attr]  # no close frame: a drop
        again = await http.ws_connect(served.ws_url, headers=origin)
        await again.send_str(orjson.dumps({**join, "id": 2, "resume": joined["resume"]}).decode())
        resumed = orjson.loads(await again.receive_str(timeout=10))
        assert resumed["type"] == "joined" and resumed["resumed"] is True, resumed
        await again.close()

        # more sockets at once than aiohttp's default connection pool (100): every one is relayed
        unlimited = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def member(uid: str) -> aiohttp.ClientWebSocketResponse:
            socket = await unlimited.ws_connect(served.ws_url)
            await socket.send_str(orjson.dumps({"type": "join", "id": 1,
                                                "token": served.token("crowd", uid)}).decode())
            reply = orjson.loads(await socket.receive_str(timeout=30))
            assert reply["type"] == "joined", reply
            return socket

        try:
            crowd = await asyncio.gather(*(member(f"m{i}") for i in range(CROWD)))
            assert len({id(s) for s in crowd}) == CROWD
            for socket in crowd:
                await socket.close()
        finally:
            await unlimited.close()
