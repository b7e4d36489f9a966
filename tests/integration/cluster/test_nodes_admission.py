"""`--max-worker-cpu` across `--redis` nodes: a node whose workers are all full sends a new session to a
node that is not; when every node is full the join is refused `unavailable` and nothing stays claimed."""

from __future__ import annotations

import shutil
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from tests.integration.cluster.test_admission import TINY_CPU_PERCENT, expect_unavailable, join
from tests.integration.cluster.test_workers import workers
from tests.integration.deploy.serve import Served, serve
from tests.redis_server import redis_missing, redis_server
from tests.support import wait_until

pytestmark = pytest.mark.skipif(redis_missing() is not None, reason=redis_missing() or "")

FULL = ("--max-worker-cpu", TINY_CPU_PERCENT)


@asynccontextmanager
async def two_nodes(tmp_path: Path, extra_a: Sequence[str],
                    extra_b: Sequence[str]) -> AsyncIterator[tuple[Served, Served, aioredis.Redis]]:
    """Nodes A and B of one cluster (as in test_nodes.py), one worker each, and a client of their Redis."""
    with redis_server() as server:
        common = ("--ice-host", "127.0.0.1", "--redis", server.url, "--workers", "1")
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(serve(tmp_path / "a", *common, *extra_a))
            (tmp_path / "b").mkdir(mode=0o700)
            shutil.copy(tmp_path / "a" / "master.key", tmp_path / "b" / "master.key")
            b = await stack.enter_async_context(serve(tmp_path / "b", *common, *extra_b))
            redis = aioredis.Redis.from_url(server.url)
            try:
                yield a, b, redis
            finally:
                await redis.aclose()
            for node in (b, a):
                node.signal(signal.SIGTERM)
                assert await node.proc.wait() == 0


async def node_reports(redis: aioredis.Redis) -> list[dict[str, object]]:
    reports = []
    for key in await redis.keys("sfu:node:*"):
        raw = await redis.get(key)
        if raw is not None:
            reports.append(orjson.loads(raw))
    return reports


async def placements(redis: aioredis.Redis) -> list[str]:
    return sorted(str(key) for key in await redis.keys("sfu:place:*"))


async def test_a_new_session_joined_through_a_full_node_lands_on_a_node_that_is_not(tmp_path: Path) -> None:
    async with two_nodes(tmp_path, FULL, ()) as (a, b, redis), aiohttp.ClientSession() as http:

        async def a_reported_full() -> bool:
            return sorted(bool(r.get("full")) for r in await node_reports(redis)) == [False, True]

        await wait_until(a_reported_full, 15)
        ws, joined = await join(http, a.ws_url, a, "meeting", "ann")
        assert joined["type"] == "joined", joined

        async def on_b() -> bool:
            return any("meeting" in w["sessions"] for w in await workers(http, b))

        await wait_until(on_b, 15)
        assert not any("meeting" in w["sessions"] for w in await workers(http, a))
        await ws.close()


@pytest.mark.parametrize("redirect", [(), ("--redirect",)], ids=["relay", "redirect"])
async def test_when_every_node_is_full_a_new_session_is_refused_and_nothing_stays_claimed(
    tmp_path: Path, redirect: tuple[str, ...],
) -> None:
    async with (two_nodes(tmp_path, (*FULL, *redirect), (*FULL, *redirect)) as (a, b, redis),
                aiohttp.ClientSession() as http):

        async def both_reported_full() -> bool:
            reports = await node_reports(redis)
            return len(reports) == 2 and all(r.get("full") is True for r in reports)

        await wait_until(both_reported_full, 15)
        for node in (a, b):
            ws, refused = await join(http, node.ws_url, node, "new-meeting", "carol")
            await expect_unavailable(ws, refused)
            assert await placements(redis) == []
        for node in (a, b):
            assert not any("new-meeting" in w["sessions"] for w in await workers(http, node))
