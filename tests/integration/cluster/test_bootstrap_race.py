"""Nodes that start at the same moment on an empty Redis create the demo credentials once: one demo client,
one secret key, one web-only key, and every node prints and uses the same ones.

The race is driven through the bootstrap function itself: several fresh `RedisStore`s (one per node, each
with its own data dir holding the cluster's master.key) run `ensure_demo` concurrently on one event loop,
so every node's first read of the empty store happens before any node's first write (without a guard,
all of them see no demo client and all create one). One more test starts two `sfu serve` processes at
once; when each reaches its bootstrap depends on process start-up, so that one may pass without a guard."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import orjson
import pytest

from sfu.auth.authenticator import Authenticator
from sfu.auth.tokens import create_token
from sfu.bootstrap import DEMO_CLIENT, DemoCredentials, ensure_demo
from sfu.config import Config
from sfu.store.redis import RedisStore
from sfu.store.sqlite import SqliteStore
from tests.integration.deploy.serve import serve
from tests.redis_server import redis_missing, redis_server

pytestmark = pytest.mark.skipif(redis_missing() is not None, reason=redis_missing() or "")

NODES = 6


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


def node_dirs(tmp_path: Path, count: int) -> list[Path]:
    """Data dirs that all hold the same master.key, as every node of a cluster must."""
    master = secrets.token_bytes(32)
    dirs = []
    for i in range(count):
        data_dir = tmp_path / f"node-{i}"
        data_dir.mkdir(mode=0o700)
        fd = os.open(data_dir / "master.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(master)
        dirs.append(data_dir)
    return dirs


@pytest.fixture
async def stores(tmp_path: Path, redis_url: str) -> AsyncIterator[list[RedisStore]]:
    opened = [RedisStore(redis_url, data_dir) for data_dir in node_dirs(tmp_path, NODES)]
    await asyncio.gather(*(store.open() for store in opened))
    yield opened
    for store in opened:
        await store.close()


async def demo_of_every_node(stores: list[RedisStore], port: int = 7880) -> list[DemoCredentials]:
    configs = [Config(port=port, data_dir=store.data_dir) for store in stores]
    return list(await asyncio.gather(*(ensure_demo(s, c) for s, c in zip(stores, configs, strict=True))))


async def assert_one_working_demo(stores: list[RedisStore], demos: list[DemoCredentials]) -> None:
    first = demos[0]
    assert all(d == first for d in demos), demos
    client = await stores[0].find_client_by_name(DEMO_CLIENT)
    assert client is not None and client.cid == first.cid
    assert [c.name for c in await stores[0].list_clients()] == [DEMO_CLIENT]
    keys = await stores[0].list_keys(first.cid)
    assert sorted(k.key_id for k in keys if k.type == "secret") == [first.key_id]
    assert sorted(k.key_id for k in keys if k.type == "web_only") == [first.web_key_id]
    token = create_token(key_id=first.key_id, secret=first.secret, sid="demo", uid="u1")
    for store in stores:
        assert (await Authenticator(store).verify_token(token)).cid == first.cid
        identity = await Authenticator(store).verify_web_key(
            first.web_key, first.origins[0], sid="demo", uid="u2", name=None)
        assert identity.key_id == first.web_key_id


async def test_nodes_starting_together_on_an_empty_redis_create_one_demo(stores: list[RedisStore]) -> None:
    demos = await demo_of_every_node(stores)
    await assert_one_working_demo(stores, demos)


async def test_a_node_started_later_uses_the_demo_the_first_node_created(stores: list[RedisStore]) -> None:
    first = await ensure_demo(stores[0], Config(port=7880, data_dir=stores[0].data_dir))
    later = await demo_of_every_node(stores[1:])
    await assert_one_working_demo(stores, [first, *later])
    again = await demo_of_every_node(stores)  # restarts: nothing new
    await assert_one_working_demo(stores, again)
    assert again[0] == first


async def test_a_revoked_demo_key_is_replaced_once_for_every_node(stores: list[RedisStore]) -> None:
    first = await ensure_demo(stores[0], Config(port=7880, data_dir=stores[0].data_dir))
    assert await stores[0].revoke_key(first.key_id)
    demos = await demo_of_every_node(stores)
    assert demos[0].key_id != first.key_id
    assert demos[0].web_key_id == first.web_key_id
    live = [k for k in await stores[0].list_keys(first.cid) if not k.revoked and k.type == "secret"]
    assert [k.key_id for k in live] == [demos[0].key_id]
    assert all(d == demos[0] for d in demos)


async def test_a_node_on_another_port_gets_a_web_key_for_every_nodes_origins(
    stores: list[RedisStore],
) -> None:
    a = await ensure_demo(stores[0], Config(port=7880, data_dir=stores[0].data_dir))
    b = await ensure_demo(stores[1], Config(port=7881, data_dir=stores[1].data_dir))
    assert b.key_id == a.key_id and b.cid == a.cid
    assert set(a.origins) <= set(b.origins) and "http://127.0.0.1:7881" in b.origins
    auth = Authenticator(stores[0])
    for web_key, origin in ((a.web_key, "http://127.0.0.1:7880"), (b.web_key, "http://127.0.0.1:7880"),
                            (b.web_key, "http://localhost:7881")):
        await auth.verify_web_key(web_key, origin, sid="demo", uid="u", name=None)  # A's page keeps working
    again = await ensure_demo(stores[0], Config(port=7880, data_dir=stores[0].data_dir))
    assert again.web_key_id == b.web_key_id  # the shared key now covers A's origins too: no ping-pong


async def test_the_sqlite_store_keeps_the_demo_in_the_data_dir_file(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    await store.open()
    try:
        config = Config(port=7880, data_dir=store.data_dir)
        first = await ensure_demo(store, config)
        assert await ensure_demo(store, config) == first
    finally:
        await store.close()


async def test_two_nodes_started_at_once_print_the_same_working_demo(tmp_path: Path, redis_url: str) -> None:
    a_dir, b_dir = node_dirs(tmp_path, 2)
    args = ("--ice-host", "127.0.0.1", "--redis", redis_url, "--workers", "1")
    async with AsyncExitStack() as stack, aiohttp.ClientSession() as http:
        a, b = await asyncio.gather(stack.enter_async_context(serve(a_dir, *args)),
                                    stack.enter_async_context(serve(b_dir, *args)))
        assert (a.key_id, a.secret) == (b.key_id, b.secret)
        for signer, node in ((a, b), (b, a)):
            ws = await http.ws_connect(node.ws_url)
            token = signer.token("standup", f"via-{node.port}")
            await ws.send_str(orjson.dumps({"type": "join", "id": 1, "token": token}).decode())
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.TEXT and orjson.loads(msg.data)["type"] == "joined", msg
            await ws.close()
        store = RedisStore(redis_url, a_dir)
        await store.open()
        try:
            client = await store.find_client_by_name(DEMO_CLIENT)
            assert client is not None
            assert [c.name for c in await store.list_clients()] == [DEMO_CLIENT]
            secret_keys = [k.key_id for k in await store.list_keys(client.cid) if k.type == "secret"]
            assert secret_keys == [a.key_id]
        finally:
            await store.close()
        for node in (a, b):
            node.signal(signal.SIGTERM)
            assert await node.proc.wait() == 0
