"""A `sfu serve --redis` node whose Redis stops answering: a `join` that the front cannot verify is closed
with 1012 (service restart: not final for any SDK, which joins again with backoff; docs/scaling.md), the
front stays up, and once Redis answers again a join succeeds."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from sfu.cluster.wsproxy import RECONNECT_CLOSE
from tests.integration.deploy.serve import Served, serve
from tests.redis_server import RedisServer, redis_missing, redis_server
from tests.support import wait_until

pytestmark = pytest.mark.skipif(redis_missing() is not None, reason=redis_missing() or "")


@contextmanager
def stopped(redis: RedisServer) -> Iterator[None]:
    """redis-server frozen (SIGSTOP): connections open, nothing answers, as with a hung or partitioned
    Redis; it carries on with its data (SIGCONT) afterwards."""
    redis.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        redis.process.send_signal(signal.SIGCONT)


async def send_join(http: aiohttp.ClientSession, node: Served, uid: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(node.ws_url)
    await ws.send_str(orjson.dumps({"type": "join", "id": 1, "token": node.token("standup", uid)}).decode())
    return ws


async def reply_to_join(http: aiohttp.ClientSession, node: Served, uid: str) -> dict[str, Any]:
    ws = await send_join(http, node, uid)
    try:
        msg = await ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return {"type": "socket", "close": msg.data}
        reply: dict[str, Any] = orjson.loads(msg.data)
        return reply
    finally:
        await ws.close()


@pytest.mark.parametrize("mode", ["relay", "redirect"])
async def test_a_join_while_redis_is_down_is_told_to_reconnect_and_succeeds_once_it_is_back(
    tmp_path: Path, mode: str
) -> None:
    extra = ("--redirect",) if mode == "redirect" else ()
    with redis_server() as redis:
        args = ("--ice-host", "127.0.0.1", "--redis", redis.url, "--workers", "1", *extra)
        async with serve(tmp_path / "node", *args) as node, aiohttp.ClientSession() as http:
            assert (await reply_to_join(http, node, "before"))["type"] == "joined"

            with stopped(redis):
                ws = await send_join(http, node, "during")
                msg = await ws.receive(timeout=30)
                # no `joined`, no `error` (an SDK gives up on an error to its join): only the close
                assert msg.type == aiohttp.WSMsgType.CLOSE, msg
                assert msg.data == RECONNECT_CLOSE, msg
                await ws.close()
                assert node.proc.returncode is None
                async with http.get(f"{node.url}/healthz") as response:
                    assert response.status == 200

            async def joins() -> bool:
                reply = await reply_to_join(http, node, "after")
                return reply.get("type") == "joined"

            await wait_until(joins, 15)
            assert node.proc.returncode is None
