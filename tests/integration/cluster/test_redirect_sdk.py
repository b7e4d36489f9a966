"""The Python SDK against two `sfu serve --redis --redirect` nodes: a join through the node that does not
own the session follows `closed {reason:"redirect", url}` (close 4014) to the owner, a dropped socket
resumes there directly, and when the owner dies the clients fall back to the URL they were given."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

import client_sdk
from client_sdk import Reconnected, TooManyRedirects
from tests.integration.cluster.test_nodes import join_raw, two_nodes
from tests.integration.cluster.test_workers import frames_within, placed, worker_of, workers
from tests.integration.deploy.serve import Served, serve
from tests.integration.sdk.test_media import ColorBars
from tests.redis_server import redis_missing, redis_server
from tests.support import wait_until

pytestmark = pytest.mark.skipif(redis_missing() is not None, reason=redis_missing() or "")


def redirects_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.name == "client_sdk.session" and "redirected" in r.getMessage())


async def test_sdk_follows_the_redirect_to_the_owner_and_falls_back_when_the_owner_dies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="client_sdk.session")
    async with two_nodes(tmp_path, "--redirect") as (a, b), aiohttp.ClientSession() as http:
        # the first join, through A, places the session on A
        viewer_a = await client_sdk.connect(a.url, token=a.token("standup", "viewer-a"), auto_subscribe=False)
        assert redirects_logged(caplog) == 0
        publisher = await client_sdk.connect(b.url, token=a.token("standup", "cam"))
        assert redirects_logged(caplog) == 1
        viewer_b = await client_sdk.connect(b.url, token=a.token("standup", "viewer-b"), auto_subscribe=False)
        assert redirects_logged(caplog) == 2
        try:
            # the joins through B landed on A: one session, on A's worker, none on B
            assert publisher.url == b.url and publisher.node_url == a.ws_url
            assert viewer_b.node_url == a.ws_url and viewer_a.node_url == a.url
            await wait_until(lambda: placed(http, a, "standup"), 10)
            home = await worker_of(http, a, "standup")
            assert home is not None
            assert all("standup" not in w["sessions"] for w in await workers(http, b))
            assert {"cam", "viewer-b"} <= set(viewer_a.participants_by_uid)

            video = await publisher.publish(ColorBars())
            await wait_until(lambda: video.feed_id in viewer_a.feeds_by_id
                             and video.feed_id in viewer_b.feeds_by_id, 10)
            assert video.feed_id is not None
            assert await frames_within(await viewer_a.subscribe(video.feed_id), 1.0) > 0
            assert await frames_within(await viewer_b.subscribe(video.feed_id), 1.0) > 0

            # a dropped socket resumes at the owner directly (no second redirect through B)
            events = publisher.events()
            assert publisher._conn is not None
            publisher._conn._ws._response.connection.transport.abort()  # type: ignore[union-attr]
            assert (await events.next(Reconnected, timeout_s=10)).resumed is True
            assert publisher.node_url == a.ws_url
            assert redirects_logged(caplog) == 2

            # node A dies whole: the clients that came through B fall back to B, which takes the session
            await viewer_a.close()  # its only URL is A's: nothing to come back to
            publisher_events, viewer_events = publisher.events(), viewer_b.events()
            old_feed_id = video.feed_id
            killed_at = time.monotonic()
            os.kill(home["pid"], signal.SIGKILL)
            a.proc.kill()
            await a.proc.wait()
            assert (await publisher_events.next(Reconnected, timeout_s=20)).resumed is False
            assert (await viewer_events.next(Reconnected, timeout_s=20)).resumed is False
            print(f"both clients back on node B {time.monotonic() - killed_at:.2f} s after node A was killed")
            assert publisher.node_url == b.url and viewer_b.node_url == b.url
            await wait_until(lambda: video.feed_id not in (None, old_feed_id)
                             and video.feed_id in viewer_b.feeds_by_id, 10)
            assert video.feed_id is not None
            assert await frames_within(await viewer_b.subscribe(video.feed_id), 1.0) > 0
            await wait_until(lambda: placed(http, b, "standup"), 10)
        finally:
            await viewer_b.close()
            await publisher.close()
            await viewer_a.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def redirect_loop(tmp_path: Path) -> AsyncIterator[tuple[Served, Served]]:
    """A misconfigured pair: A advertises B's address (`--node-url`), B has `--redirect`. A session placed
    on A (its first join came through A) makes B redirect every join for it to... B."""
    port_b = _free_port()
    with redis_server() as redis:
        common = ("--ice-host", "127.0.0.1", "--redis", redis.url)
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(
                serve(tmp_path / "a", *common, "--node-url", f"http://127.0.0.1:{port_b}"))
            (tmp_path / "b").mkdir(mode=0o700)
            shutil.copy(tmp_path / "a" / "master.key", tmp_path / "b" / "master.key")
            b = await stack.enter_async_context(
                serve(tmp_path / "b", *common, "--port", str(port_b), "--redirect"))
            assert b.port == port_b
            yield a, b
            for node in (b, a):
                node.signal(signal.SIGTERM)
                assert await node.proc.wait() == 0


async def test_a_redirect_loop_ends_in_a_typed_error_after_three_redirects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="client_sdk.session")
    async with redirect_loop(tmp_path) as (a, b), aiohttp.ClientSession() as http:
        first, joined = await join_raw(http, a.ws_url, a.token("standup", "alice"))
        assert joined["type"] == "joined", joined
        session = client_sdk.Session(b.url, token=a.token("standup", "bob"))
        with pytest.raises(TooManyRedirects) as raised:
            await session.join()
        assert raised.value.code == "redirect_loop" and b.ws_url in raised.value.message
        assert redirects_logged(caplog) == 3
        assert not session.closed  # never joined: nothing to tear down, no reconnect running
        await session.close()
        await first.close()
