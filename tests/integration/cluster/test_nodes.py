"""Two `sfu serve --redis` nodes on loopback with a private redis-server: one session across both nodes,
media between participants that joined through different nodes, the admin API of either node, the owner's
worker killed mid-session, and `--redirect`."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

import client_sdk
from client_sdk import Reconnected
from tests.integration.cluster.test_workers import admin_headers, frames_within, worker_of, workers
from tests.integration.deploy.serve import Served, serve
from tests.integration.sdk.test_media import ColorBars
from tests.redis_server import redis_missing, redis_server
from tests.support import wait_until

pytestmark = pytest.mark.skipif(redis_missing() is not None, reason=redis_missing() or "")


@asynccontextmanager
async def two_nodes(tmp_path: Path, *extra_b: str) -> AsyncIterator[tuple[Served, Served]]:
    """Node A, then node B with A's master.key (every node of a cluster shares it), one Redis."""
    with redis_server() as redis:
        common = ("--ice-host", "127.0.0.1", "--redis", redis.url)
        async with AsyncExitStack() as stack:
            # A, where the sessions start, has a spare worker: a killed worker's sessions move at once
            # instead of waiting for its restart
            a = await stack.enter_async_context(
                serve(tmp_path / "a", *common, "--workers", "2", "--region", "eu"))
            (tmp_path / "b").mkdir(mode=0o700)
            shutil.copy(tmp_path / "a" / "master.key", tmp_path / "b" / "master.key")
            b = await stack.enter_async_context(
                serve(tmp_path / "b", *common, "--workers", "1", "--region", "us", *extra_b))
            yield a, b
            for node in (b, a):
                if node.proc.returncode is None:  # not killed by the test
                    node.signal(signal.SIGTERM)
                    assert await node.proc.wait() == 0


async def list_sessions(
    http: aiohttp.ClientSession, node: Served, token_from: Served
) -> list[dict[str, Any]]:
    async with http.get(f"{node.url}/v1/sessions", headers=admin_headers(token_from)) as response:
        assert response.status == 200, await response.text()
        sessions: list[dict[str, Any]] = (await response.json())["sessions"]
        return sessions


async def test_participants_of_two_nodes_share_one_session_and_come_back_after_its_worker_dies(
    tmp_path: Path,
) -> None:
    async with two_nodes(tmp_path) as (a, b), aiohttp.ClientSession() as http:
        # A's credentials work on B: the keys live in Redis
        publisher = await client_sdk.connect(a.url, token=a.token("standup", "cam"))
        viewer = await client_sdk.connect(b.url, token=a.token("standup", "viewer"), auto_subscribe=False)
        try:
            video = await publisher.publish(ColorBars())
            await wait_until(lambda: video.feed_id in viewer.feeds_by_id, 10)
            assert video.feed_id is not None
            remote = await viewer.subscribe(video.feed_id)
            assert await frames_within(remote, 1.0) > 0
            assert "cam" in viewer.participants_by_uid and "viewer" in publisher.participants_by_uid

            # one session, on A's worker (the first join came through A); B relays its participant there
            home = await worker_of(http, a, "standup")
            assert home is not None
            assert all("standup" not in w["sessions"] for w in await workers(http, b))

            # the admin API of either node sees it, with both participants
            for node in (a, b):
                sessions = await list_sessions(http, node, a)
                assert [s["sid"] for s in sessions] == ["standup"], sessions
                assert sorted(p["uid"] for p in sessions[0]["participants"]) == ["cam", "viewer"]
            async with http.get(f"{b.url}/v1/sessions/standup", headers=admin_headers(a)) as response:
                assert response.status == 200
                assert {p["uid"] for p in (await response.json())["participants"]} == {"cam", "viewer"}

            # kill -9 the owner's worker: both participants are back within 10 s, on one session again
            publisher_events, viewer_events = publisher.events(), viewer.events()
            old_feed_id = video.feed_id
            killed_at = time.monotonic()
            os.kill(home["pid"], signal.SIGKILL)
            assert (await publisher_events.next(Reconnected, timeout_s=10)).resumed is False
            assert (await viewer_events.next(Reconnected, timeout_s=10)).resumed is False
            back_after_s = time.monotonic() - killed_at
            print(f"both participants back {back_after_s:.2f} s after the kill")
            assert back_after_s < 10.0
            await wait_until(lambda: video.feed_id != old_feed_id and video.feed_id in viewer.feeds_by_id, 10)
            assert video.feed_id is not None
            remote = await viewer.subscribe(video.feed_id)
            assert await frames_within(remote, 1.0) > 0
            sessions = await list_sessions(http, b, a)
            assert [s["sid"] for s in sessions] == ["standup"], sessions
            assert sorted(p["uid"] for p in sessions[0]["participants"]) == ["cam", "viewer"]
        finally:
            await viewer.close()
            await publisher.close()


async def join_raw(
    http: aiohttp.ClientSession, ws_url: str, token: str
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await http.ws_connect(ws_url)
    await ws.send_str(orjson.dumps({"type": "join", "id": 1, "token": token}).decode())
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    reply: dict[str, Any] = orjson.loads(msg.data)
    return ws, reply


async def test_with_redirect_a_join_for_another_nodes_session_is_sent_there(tmp_path: Path) -> None:
    async with two_nodes(tmp_path, "--redirect") as (a, b), aiohttp.ClientSession() as http:
        first, joined = await join_raw(http, a.ws_url, a.token("standup", "alice"))
        assert joined["type"] == "joined", joined
        redirected, closed = await join_raw(http, b.ws_url, a.token("standup", "bob"))
        assert closed["type"] == "closed" and closed["reason"] == "redirect" and closed["reconnect"] is True
        assert closed["url"] == a.ws_url, closed
        msg = await redirected.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4014
        second, joined = await join_raw(http, closed["url"], a.token("standup", "bob"))
        assert joined["type"] == "joined"
        assert "alice" in {p["uid"] for p in joined["participants"]}, joined
        # a new session whose first join reaches B is B's own: no redirect
        third, joined = await join_raw(http, b.ws_url, a.token("other", "carol"))
        assert joined["type"] == "joined", joined
        for ws in (first, second, third):
            await ws.close()


async def test_when_the_owning_node_dies_its_session_comes_back_on_a_live_node(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b), aiohttp.ClientSession() as http:
        early, joined = await join_raw(http, a.ws_url, a.token("standup", "early"))  # placed on A
        assert joined["type"] == "joined"
        publisher = await client_sdk.connect(b.url, token=a.token("standup", "cam"))
        viewer = await client_sdk.connect(b.url, token=a.token("standup", "viewer"), auto_subscribe=False)
        try:
            video = await publisher.publish(ColorBars())
            await wait_until(lambda: video.feed_id in viewer.feeds_by_id, 10)
            assert video.feed_id is not None
            assert await frames_within(await viewer.subscribe(video.feed_id), 1.0) > 0
            home = await worker_of(http, a, "standup")
            assert home is not None

            # A dies whole (front and worker, no goodbye): B takes the session over on the next joins
            publisher_events, viewer_events = publisher.events(), viewer.events()
            old_feed_id = video.feed_id
            killed_at = time.monotonic()
            os.kill(home["pid"], signal.SIGKILL)
            a.proc.kill()
            await a.proc.wait()
            assert (await publisher_events.next(Reconnected, timeout_s=10)).resumed is False
            assert (await viewer_events.next(Reconnected, timeout_s=10)).resumed is False
            back_after_s = time.monotonic() - killed_at
            print(f"both participants back on node B {back_after_s:.2f} s after node A was killed")
            assert back_after_s < 10.0
            await wait_until(lambda: video.feed_id != old_feed_id and video.feed_id in viewer.feeds_by_id, 10)
            assert video.feed_id is not None
            assert await frames_within(await viewer.subscribe(video.feed_id), 1.0) > 0
            assert await worker_of(http, b, "standup") is not None
            sessions = await list_sessions(http, b, a)
            assert [sorted(p["uid"] for p in s["participants"]) for s in sessions] == [["cam", "viewer"]]
        finally:
            await viewer.close()
            await publisher.close()
            await early.close()
