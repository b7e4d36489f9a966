"""What only the Redis store has: several nodes on one Redis, master.key checks, and raw-Redis tampering.

The behaviour both stores share runs against each of them in test_sqlite_keys.py/test_sqlite_messages.py.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from sfu.auth.identity import Grants
from sfu.errors import Conflict
from sfu.store.base import HISTORY_PER_PIPELINE, RecordingRecord, Store, StoredMessage
from sfu.store.redis import RedisStore

DAY_MS = 86_400_000


@pytest.fixture
def prefix() -> str:
    return f"test-{secrets.token_hex(6)}:"


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def node(redis_url: str, data_dir: Path, prefix: str, **kwargs: object) -> RedisStore:
    store = RedisStore(redis_url, data_dir, prefix=prefix, **kwargs)  # type: ignore[arg-type]
    await store.open()
    return store


async def two_nodes(redis_url: str, tmp_path: Path, prefix: str) -> tuple[RedisStore, RedisStore]:
    first = await node(redis_url, tmp_path / "a", prefix)
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy(tmp_path / "a" / "master.key", tmp_path / "b" / "master.key")
    return first, await node(redis_url, tmp_path / "b", prefix)


async def test_a_key_made_on_one_node_verifies_on_another_and_revocation_is_seen_at_once(
    redis_url: str, tmp_path: Path, prefix: str
) -> None:
    a, b = await two_nodes(redis_url, tmp_path, prefix)
    try:
        client = await a.create_client("acme")
        key, secret = await a.create_secret_key(client.cid)
        web, value = await a.create_web_key(client.cid, ("https://example.com",), Grants())
        assert secret is not None
        assert await b.key_secret(key.key_id) == secret.encode()
        assert await b.find_web_key(value) == web
        assert await b.find_client_by_name("acme") == client
        assert await b.revoke_key(key.key_id)
        assert await a.key_secret(key.key_id) is None
        assert (await a.get_key(key.key_id)) is not None and (await a.get_key(key.key_id)).revoked  # type: ignore[union-attr]
    finally:
        await a.close()
        await b.close()


async def test_a_node_without_the_clusters_master_key_refuses_to_start(
    redis_url: str, tmp_path: Path, prefix: str
) -> None:
    first = await node(redis_url, tmp_path / "a", prefix)
    await first.close()
    with pytest.raises(RuntimeError, match=r"master\.key is missing"):
        await node(redis_url, tmp_path / "b", prefix)
    (tmp_path / "c").mkdir(mode=0o700)
    (tmp_path / "c" / "master.key").write_bytes(b"\x01" * 32)
    with pytest.raises(RuntimeError, match=r"not the master\.key"):
        await node(redis_url, tmp_path / "c", prefix)


async def test_an_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    store = RedisStore("redis://127.0.0.1:1/0", tmp_path / "data")
    with pytest.raises(RuntimeError, match=r"cannot use Redis at redis://127\.0\.0\.1:1/0"):
        await store.open()


async def test_redis_holds_neither_the_secret_nor_the_web_key(
    redis_url: str, tmp_path: Path, prefix: str, raw: aioredis.Redis
) -> None:
    store = await node(redis_url, tmp_path / "a", prefix)
    try:
        client = await store.create_client("acme")
        _, secret = await store.create_secret_key(client.cid)
        _, value = await store.create_web_key(client.cid, ("https://example.com",), Grants())
    finally:
        await store.close()
    assert secret is not None
    parts: list[object] = []
    async for name in raw.scan_iter(match=prefix + "*"):
        kind = await raw.type(name)
        if kind == b"hash":
            parts.extend(item for pair in (await raw.hgetall(name)).items() for item in pair)
        elif kind == b"string":
            parts.extend((name, await raw.get(name)))
        elif kind == b"zset":
            parts.extend(await raw.zrange(name, 0, -1))
    dumped = b"".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)
    assert b"acme" in dumped  # what was read is the store's content: the check below means something
    assert secret[3:].encode() not in dumped
    assert value[3:].encode() not in dumped
    master = (tmp_path / "a" / "master.key").read_bytes()
    assert master not in dumped


async def test_an_edited_key_in_redis_is_ignored(
    redis_url: str, tmp_path: Path, prefix: str, raw: aioredis.Redis
) -> None:
    store = await node(redis_url, tmp_path / "a", prefix)
    try:
        client = await store.create_client("acme")
        record, value = await store.create_web_key(client.cid, ("https://example.com",), Grants(), 5)
        row = orjson.loads(await raw.hget(f"{prefix}key:{record.key_id}", "row"))  # type: ignore[arg-type]
        row["origins"] = ["https://evil.net"]
        await raw.hset(f"{prefix}key:{record.key_id}", "row", orjson.dumps(row))
        assert await store.find_web_key(value) is None
        assert await store.get_key(record.key_id) is None
        assert await store.list_keys(client.cid) == []
    finally:
        await store.close()


async def test_a_client_name_is_unique_under_concurrent_creation(
    redis_url: str, tmp_path: Path, prefix: str
) -> None:
    a, b = await two_nodes(redis_url, tmp_path, prefix)
    try:
        results = await asyncio.gather(*(s.create_client("acme") for s in (a, b, a, b)),
                                       return_exceptions=True)
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        assert sum(isinstance(r, Conflict) for r in results) == 3
        assert [c.name for c in await b.list_clients()] == ["acme"]
    finally:
        await a.close()
        await b.close()


async def test_interrupt_recordings_marks_only_this_nodes_own(
    redis_url: str, tmp_path: Path, prefix: str
) -> None:
    a, b = await two_nodes(redis_url, tmp_path, prefix)
    try:
        mine = RecordingRecord("rec_a", "c_1", "room", "recording", 1.0)
        theirs = RecordingRecord("rec_b", "c_1", "room", "recording", 2.0)
        await a.save_recording(mine)
        await b.save_recording(theirs)
        assert await a.interrupt_recordings() == 1
        states = {r.recording_id: r.state for r in await b.list_recordings("c_1")}
        assert states == {"rec_a": "interrupted", "rec_b": "recording"}
        assert await a.interrupt_recordings() == 0
        assert await a.get_recording("c_2", "rec_a") is None
    finally:
        await a.close()
        await b.close()


async def test_prune_drops_old_messages_and_forgets_an_emptied_pipeline(
    redis_url: str, tmp_path: Path, prefix: str
) -> None:
    store = await node(redis_url, tmp_path / "a", prefix, retention_days=2)
    try:
        now = 10 * DAY_MS
        for seq in range(1, 4):
            await store.append_message("c_1", "room", StoredMessage(seq, "a", "old", now - 3 * DAY_MS, seq))
        await store.append_message("c_1", "room", StoredMessage(1, "a", "chat", now - DAY_MS, "x"))
        assert await store.list_pipelines("c_1", "room") == ["chat", "old"]
        assert await store.prune_messages(now) == 3
        assert await store.list_pipelines("c_1", "room") == ["chat"]
        assert await store.prune_messages(now) == 0
    finally:
        await store.close()


async def test_a_message_stored_again_under_its_seq_replaces_the_first(
    redis_url: str, tmp_path: Path, prefix: str, raw: aioredis.Redis
) -> None:
    store = await node(redis_url, tmp_path / "a", prefix)
    try:
        await store.append_message("c_1", "room", StoredMessage(1, "a", "chat", 5, "first"))
        await store.append_message("c_1", "room", StoredMessage(1, "a", "chat", 6, "second"))
        page = await store.list_messages("c_1", "room", "chat", for_uid="x")
        assert [(m.seq, m.data) for m in page] == [(1, "second")]
        for seq in range(2, HISTORY_PER_PIPELINE + 3):
            await store.append_message("c_1", "room", StoredMessage(seq, "a", "chat", 7, seq))
        page = await store.list_messages("c_1", "room", "chat", for_uid="x", after=0, limit=1000)
        assert len(page) == HISTORY_PER_PIPELINE and page[0].seq == 3
        group = orjson.dumps(["c_1", "room", "chat"]).decode()
        assert await raw.zcard(f"{prefix}msgts:{group}") == HISTORY_PER_PIPELINE  # trimmed along
    finally:
        await store.close()


def test_redis_store_implements_the_store_protocol(tmp_path: Path) -> None:
    store: Store = RedisStore("redis://127.0.0.1:1/0", tmp_path)  # mypy checks every signature
    assert isinstance(store, RedisStore)
