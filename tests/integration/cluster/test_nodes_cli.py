"""`sfu client|key ... --redis URL`: the shared store managed from any node, offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sfu.store.redis import RedisStore
from tests.integration.test_cli import clean_env, sfu
from tests.redis_server import redis_missing, redis_server

pytestmark = pytest.mark.skipif(redis_missing() is not None, reason=redis_missing() or "")


async def test_clients_and_keys_made_on_one_node_are_usable_from_another(tmp_path: Path) -> None:
    with redis_server() as redis:
        made = await sfu("client", "create", "acme", "--redis", redis.url, "--data-dir", tmp_path / "a",
                         "--json")
        assert made.code == 0, made.err
        cid = made.json()["cid"]
        (tmp_path / "b").mkdir(mode=0o700)
        shutil.copy(tmp_path / "a" / "master.key", tmp_path / "b" / "master.key")
        env = clean_env(SFU_REDIS_URL=redis.url)
        key = await sfu("key", "create", "--client", "acme", "--data-dir", tmp_path / "b", "--json", env=env)
        assert key.code == 0, key.err
        assert key.json()["cid"] == cid

        store = RedisStore(redis.url, tmp_path / "a")
        await store.open()
        try:
            assert await store.key_secret(key.json()["key_id"]) == key.json()["secret"].encode()
        finally:
            await store.close()

        # the data dir's own SQLite store is not involved
        local = await sfu("client", "list", "--data-dir", tmp_path / "b", "--json")
        assert local.code == 0 and local.json() == {"clients": []}
        # a node without the cluster's master.key is refused with the reason
        refused = await sfu("client", "list", "--redis", redis.url, "--data-dir", tmp_path / "c")
        assert refused.code == 1 and "master.key is missing" in refused.err
