"""The shared store for many nodes (`--redis URL`): the `Store` of sfu/store/base.py on Redis.

Every node of a cluster reads the same clients, keys, webhooks, persisted pipeline messages and recording
metadata, so any node verifies any token and sees a revocation at once (nothing is cached).

Secrets are protected exactly as in the SQLite store (sfu/store/keyseal.py), by `master.key` in each
node's data directory (the same 32 bytes on every node: copy the first node's file): HS256 secrets are
encrypted with it, web-only key values are stored only as an HMAC, and every key carries a MAC over what
decides access. Whoever reads or edits Redis alone therefore gets no usable
secret and cannot widen a key. Redis also keeps an HMAC of the master key itself (`meta`), so a node
started with a different `master.key` refuses to start instead of treating every key as tampered.

Layout (all under the prefix, default `sfu:`): `client:<cid>` hash, `client-names` hash name -> cid,
`clients` zset by creation; `key:<key_id>` hash (row JSON, mac, secret_enc, value_hash), `keys:<cid>`
zset, `webkey:<hmac hex>` -> key_id; `seq:<group>` counter, `msgs:<group>` zset by seq, `msgts:<group>`
zset seq by timestamp, `pipes:<cid,session>` set, `msggroups` set (pruning); `webhook:<id>` hash,
`webhooks:<cid>` zset; `rec:<id>` JSON, `recs:<cid>` zset, `recs-live:<owner>` set of running ones;
`demo` the demo credentials of sfu/bootstrap.py (JSON sealed under master.key, as a secret is), written
holding `bootstrap-lock` (SET NX with an expiry: nodes starting together create them once).
A group is the JSON array `[cid, session, pipeline]`, so no name can collide with another.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sfu.auth.identity import Grants
from sfu.errors import Conflict
from sfu.store.base import (
    HISTORY_PER_PIPELINE,
    ClientRecord,
    KeyAlgorithm,
    KeyRecord,
    RecordingRecord,
    StoredMessage,
    WebhookRecord,
    check_client_name,
    check_webhook_key,
    check_webhook_url,
    new_id,
    page_limit,
    require_client,
)
from sfu.store.keyseal import KeySeal, check_algorithm, load_master_key

log = logging.getLogger("sfu.store")

DEFAULT_PREFIX = "sfu:"

# Stores one message: replaces an equal seq (like SQLite's INSERT OR REPLACE), then keeps the newest `keep`.
# KEYS: msgs, msgts, pipes, msggroups. ARGV: seq, member, ts, pipeline, group, keep.
_APPEND_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[5])
local n = redis.call('ZCARD', KEYS[1])
local keep = tonumber(ARGV[6])
if n > keep then
  local old = redis.call('ZRANGE', KEYS[1], 0, n - keep - 1, 'WITHSCORES')
  for i = 2, #old, 2 do redis.call('ZREM', KEYS[2], old[i]) end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - keep - 1)
end
return 0
"""

# Drops one group's messages older than the cutoff and beyond the newest `keep`; forgets an emptied group.
# KEYS: msgs, msgts, pipes, msggroups. ARGV: cutoff (exclusive), keep, pipeline, group. Returns the count.
_PRUNE_LUA = """
local dropped = 0
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, seq in ipairs(old) do
  dropped = dropped + redis.call('ZREMRANGEBYSCORE', KEYS[1], seq, seq)
  redis.call('ZREM', KEYS[2], seq)
end
local n = redis.call('ZCARD', KEYS[1])
local keep = tonumber(ARGV[2])
if n > keep then
  local excess = redis.call('ZRANGE', KEYS[1], 0, n - keep - 1, 'WITHSCORES')
  for i = 2, #excess, 2 do redis.call('ZREM', KEYS[2], excess[i]) end
  dropped = dropped + redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - keep - 1)
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[3])
  redis.call('SREM', KEYS[4], ARGV[4])
end
return dropped
"""


# Deletes the lock only if it is still the caller's (not expired and taken by another node meanwhile).
# KEYS: lock. ARGV: token.
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

REDIS_TIMEOUT_S = 5.0
"""A call Redis does not answer within this fails (joins get a reconnect close, heartbeats retry)."""
BOOTSTRAP_LOCK_MS = 30_000
"""How long a node may hold the bootstrap lock; one that dies holding it blocks the others this long."""
_DEMO_SEAL_ID = "bootstrap:demo"
"""Associated data of the sealed demo credentials (key ids are `k_...`: no sealed secret can pass for it)."""


def default_owner(data_dir: Path) -> str:
    """Whose running recordings `interrupt_recordings` may mark: this host's data directory."""
    return f"{socket.gethostname()}:{Path(data_dir).resolve()}"


class RedisStore:
    """The `Store` of sfu/store/base.py on Redis (redis-py asyncio); secrets under the node's master.key."""

    def __init__(
        self,
        url: str,
        data_dir: Path,
        *,
        retention_days: float = 7.0,
        prefix: str = DEFAULT_PREFIX,
        owner: str | None = None,
    ) -> None:
        self.url = url
        self.data_dir = Path(data_dir)
        self.retention_ms = int(retention_days * 86_400_000)
        self.prefix = prefix
        self.owner = owner or default_owner(self.data_dir)
        self._redis: aioredis.Redis | None = None
        self._keyseal: KeySeal | None = None
        self._append: Any = None
        self._prune: Any = None
        self._unlock: Any = None

    # lifecycle

    async def open(self) -> None:
        if self._redis is not None:
            return
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        # NOTE: explicit timeouts (redis-py < 6 has none): a hung Redis fails a call, it does not hang it;
        # options in the URL's query win
        client = aioredis.Redis.from_url(self.url, decode_responses=False, socket_timeout=REDIS_TIMEOUT_S,
                                         socket_connect_timeout=REDIS_TIMEOUT_S)
        try:
            await client.ping()
            self._keyseal = await self._load_master(client)
        except RedisError as exc:
            await client.aclose()
            raise RuntimeError(f"cannot use Redis at {self.url}: {exc}") from None
        except BaseException:
            await client.aclose()
            raise
        self._append = client.register_script(_APPEND_LUA)
        self._prune = client.register_script(_PRUNE_LUA)
        self._unlock = client.register_script(_UNLOCK_LUA)
        self._redis = client

    async def _load_master(self, client: aioredis.Redis) -> KeySeal:
        meta = self.prefix + "meta"
        known = await client.hget(meta, "master_check")
        path = self.data_dir / "master.key"
        if known is None:
            keyseal = KeySeal(load_master_key(self.data_dir, create=True))
            if await client.hsetnx(meta, "master_check", keyseal.master_check()):
                log.info("initialized the shared store at %s (prefix %r)", self.url, self.prefix)
                return keyseal
            known = await client.hget(meta, "master_check")  # another node initialized it meanwhile
        elif not path.exists():
            raise RuntimeError(
                f"{path} is missing: the keys in Redis ({self.url}) were written under another node's "
                "master.key; copy that file here (mode 0600)"
            )
        keyseal = KeySeal(load_master_key(self.data_dir, create=False))
        if not hmac.compare_digest(keyseal.master_check(), _bytes(known or b"")):
            raise RuntimeError(
                f"{path} is not the master.key the keys in Redis ({self.url}) were written with; "
                "every node of a cluster needs the same file"
            )
        return keyseal

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("store is not open")
        return self._redis

    @property
    def keyseal(self) -> KeySeal:
        if self._keyseal is None:
            raise RuntimeError("store is not open")
        return self._keyseal

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # clients

    async def create_client(self, name: str) -> ClientRecord:
        check_client_name(name)
        record = ClientRecord(new_id("c"), name, time.time())
        r = self.redis
        if not await r.hsetnx(self._k("client-names"), name, record.cid):
            raise Conflict(f"a client named {name!r} already exists")
        async with r.pipeline(transaction=True) as tx:
            tx.hset(self._k("client", record.cid),
                    mapping={"name": name, "created_at": repr(record.created_at)})
            tx.zadd(self._k("clients"), {record.cid: record.created_at})
            await tx.execute()
        return record

    async def get_client(self, cid: str) -> ClientRecord | None:
        row = await self._hgetall(self._k("client", cid))
        if not row:
            return None
        return ClientRecord(cid, row[b"name"].decode(), float(row[b"created_at"]))

    async def find_client_by_name(self, name: str) -> ClientRecord | None:
        cid = await self._hget(self._k("client-names"), name)
        return await self.get_client(cid.decode()) if cid is not None else None

    async def list_clients(self) -> list[ClientRecord]:
        cids = await self._zrange(self._k("clients"))
        clients = [await self.get_client(cid) for cid in cids]
        return [c for c in clients if c is not None]

    # keys

    async def create_secret_key(
        self, cid: str, algorithm: KeyAlgorithm = "HS256", public_key: str | None = None
    ) -> tuple[KeyRecord, str | None]:
        check_algorithm(algorithm)
        await require_client(self, cid)
        record, secret, secret_enc = self.keyseal.new_secret_key(cid, algorithm, public_key)
        await self._insert_key(record, secret_enc=secret_enc, value_hash=None)
        return record, secret

    async def create_web_key(
        self, cid: str, origins: tuple[str, ...], grants: Grants, max_participants: int | None = None
    ) -> tuple[KeyRecord, str]:
        record, value, value_hash = self.keyseal.new_web_key(cid, origins, grants, max_participants)
        await require_client(self, cid)
        await self._insert_key(record, secret_enc=None, value_hash=value_hash)
        return record, value

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = await self._hgetall(self._k("key", key_id))
        return self._key_from_hash(key_id, row) if row else None

    async def key_secret(self, key_id: str) -> bytes | None:
        row = await self._hgetall(self._k("key", key_id))
        record = self._key_from_hash(key_id, row) if row else None
        if record is None or record.revoked or record.algorithm != "HS256" or record.type != "secret":
            return None
        return self.keyseal.unseal(key_id, row.get(b"secret_enc", b""))

    async def find_web_key(self, key_value: str) -> KeyRecord | None:
        value_hash = self.keyseal.value_hash(key_value)
        key_id = await self._get(self._k("webkey", value_hash.hex()))
        if key_id is None:
            return None
        row = await self._hgetall(self._k("key", key_id.decode()))
        if not row or not hmac.compare_digest(row.get(b"value_hash", b""), value_hash):
            return None
        record = self._key_from_hash(key_id.decode(), row)
        return record if record is not None and record.type == "web_only" else None

    async def list_keys(self, cid: str) -> list[KeyRecord]:
        key_ids = await self._zrange(self._k("keys", cid))
        records = [await self.get_key(key_id) for key_id in key_ids]
        return [r for r in records if r is not None and r.cid == cid]

    async def revoke_key(self, key_id: str) -> bool:
        record = await self.get_key(key_id)
        if record is None or record.revoked:
            return False
        revoked = replace(record, revoked=True)
        await self.redis.hset(self._k("key", key_id),
                              mapping={"row": _key_row(revoked), "mac": self.keyseal.mac(revoked)})
        return True

    # data pipelines

    def _group(self, cid: str, session: str, pipeline: str) -> str:
        return orjson.dumps([cid, session, pipeline]).decode()

    def _group_keys(self, group: str, cid: str, session: str) -> list[str]:
        return [self._k("msgs", group), self._k("msgts", group), self._pipes_key(cid, session),
                self._k("msggroups")]

    def _pipes_key(self, cid: str, session: str) -> str:
        return self._k("pipes", orjson.dumps([cid, session]).decode())

    async def next_seq(self, cid: str, session: str, pipeline: str) -> int:
        return int(await self.redis.incr(self._k("seq", self._group(cid, session, pipeline))))

    async def append_message(self, cid: str, session: str, message: StoredMessage) -> None:
        self.redis  # noqa: B018 - "store is not open" after close, like every other call
        group = self._group(cid, session, message.pipeline)
        to = list(message.to) if message.to is not None else None
        member = orjson.dumps([message.seq, message.from_uid, message.ts_ms, message.data, to])
        await self._append(keys=self._group_keys(group, cid, session),
                           args=[message.seq, member, message.ts_ms, message.pipeline, group,
                                 HISTORY_PER_PIPELINE])

    async def list_messages(
        self,
        cid: str,
        session: str,
        pipeline: str,
        *,
        for_uid: str,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> list[StoredMessage]:
        limit = page_limit(limit)
        low = f"({int(after)}" if after is not None else "-inf"
        high = f"({int(before)}" if before is not None else "+inf"
        raw = await self.redis.zrangebyscore(self._k("msgs", self._group(cid, session, pipeline)), low, high)
        visible: list[StoredMessage] = []
        for item in raw:
            seq, from_uid, ts_ms, data, to = orjson.loads(_bytes(item))
            if to is None or from_uid == for_uid or for_uid in to:
                visible.append(StoredMessage(seq, from_uid, pipeline, ts_ms, data,
                                             tuple(to) if to is not None else None))
        # `after` reads forward from a point (what was missed); otherwise the newest page before `before`.
        return visible[:limit] if after is not None else visible[-limit:]

    async def list_pipelines(self, cid: str, session: str) -> list[str]:
        names = sorted(await self._smembers(self._pipes_key(cid, session)))
        return [name for name in names
                if await self.redis.zcard(self._k("msgs", self._group(cid, session, name)))]

    async def prune_messages(self, now_ms: int) -> int:
        cutoff = now_ms - self.retention_ms
        dropped = 0
        for group in await self._smembers(self._k("msggroups")):
            try:
                cid, session, pipeline = orjson.loads(group)
            except (orjson.JSONDecodeError, ValueError):
                log.warning("ignoring a malformed message group %r in Redis", group)
                continue
            dropped += int(await self._prune(keys=self._group_keys(group, cid, session),
                                             args=[cutoff, HISTORY_PER_PIPELINE, pipeline, group]))
        return dropped

    # webhooks

    async def add_webhook(self, cid: str, url: str, key_id: str) -> WebhookRecord:
        check_webhook_url(url)
        check_webhook_key(await self.get_key(key_id), cid)
        record = WebhookRecord(new_id("wh"), cid, url, key_id, time.time())
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hset(self._k("webhook", record.webhook_id),
                    mapping={"cid": cid, "url": url, "key_id": key_id, "created_at": repr(record.created_at)})
            tx.zadd(self._k("webhooks", cid), {record.webhook_id: record.created_at})
            await tx.execute()
        return record

    async def list_webhooks(self, cid: str) -> list[WebhookRecord]:
        records = []
        for webhook_id in await self._zrange(self._k("webhooks", cid)):
            row = await self._hgetall(self._k("webhook", webhook_id))
            if row and row[b"cid"].decode() == cid:
                records.append(WebhookRecord(webhook_id, cid, row[b"url"].decode(),
                                             row[b"key_id"].decode(), float(row[b"created_at"])))
        return records

    async def delete_webhook(self, cid: str, webhook_id: str) -> bool:
        owner = await self._hget(self._k("webhook", webhook_id), "cid")
        if owner is None or owner.decode() != cid:
            return False
        async with self.redis.pipeline(transaction=True) as tx:
            tx.delete(self._k("webhook", webhook_id))
            tx.zrem(self._k("webhooks", cid), webhook_id)
            await tx.execute()
        return True

    # recordings

    async def save_recording(self, record: RecordingRecord) -> None:
        body = {
            "recording_id": record.recording_id, "cid": record.cid, "sid": record.sid, "state": record.state,
            "started_at": record.started_at, "stopped_at": record.stopped_at,
            "feed_ids": list(record.feed_ids) if record.feed_ids is not None else None,
            "files": list(record.files), "error": record.error, "owner": self.owner,
        }
        live = self._k("recs-live", self.owner)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(self._k("rec", record.recording_id), orjson.dumps(body))
            tx.zadd(self._k("recs", record.cid), {record.recording_id: record.started_at})
            if record.state == "recording":
                tx.sadd(live, record.recording_id)
            else:
                tx.srem(live, record.recording_id)
            await tx.execute()

    async def _load_recording(self, recording_id: str) -> tuple[RecordingRecord, dict[str, Any]] | None:
        raw = await self._get(self._k("rec", recording_id))
        if raw is None:
            return None
        body = orjson.loads(raw)
        feed_ids = body["feed_ids"]
        record = RecordingRecord(body["recording_id"], body["cid"], body["sid"], body["state"],
                                 body["started_at"], body["stopped_at"],
                                 tuple(feed_ids) if feed_ids is not None else None,
                                 tuple(body["files"]), body["error"])
        return record, body

    async def get_recording(self, cid: str, recording_id: str) -> RecordingRecord | None:
        loaded = await self._load_recording(recording_id)
        return loaded[0] if loaded is not None and loaded[0].cid == cid else None

    async def list_recordings(self, cid: str) -> list[RecordingRecord]:
        records = []
        for recording_id in await self._zrange(self._k("recs", cid)):
            loaded = await self._load_recording(recording_id)
            if loaded is not None and loaded[0].cid == cid:
                records.append(loaded[0])
        return records

    async def interrupt_recordings(self) -> int:
        """Only this node's (`owner`'s): the others' recordings may be running right now."""
        count = 0
        for recording_id in await self._smembers(self._k("recs-live", self.owner)):
            loaded = await self._load_recording(recording_id)
            if loaded is None or loaded[0].state != "recording":
                continue
            record = loaded[0]
            await self.save_recording(RecordingRecord(
                record.recording_id, record.cid, record.sid, "interrupted", record.started_at, time.time(),
                record.feed_ids, record.files, record.error))
            count += 1
        await self.redis.delete(self._k("recs-live", self.owner))
        return count

    # first-start credentials (sfu/bootstrap.py)

    @asynccontextmanager
    async def bootstrap_lock(self) -> AsyncIterator[None]:
        """One node at a time, across the cluster; waits for a holder (at most until its lock expires)."""
        key, token = self._k("bootstrap-lock"), secrets.token_hex(16)
        deadline = time.monotonic() + 2 * BOOTSTRAP_LOCK_MS / 1000
        while not await self.redis.set(key, token, nx=True, px=BOOTSTRAP_LOCK_MS):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bootstrap lock {key!r} in Redis stays taken")
            await asyncio.sleep(0.05)
        try:
            yield
        finally:
            await self._unlock(keys=[key], args=[token])

    async def load_demo(self) -> dict[str, Any] | None:
        blob = await self._get(self._k("demo"))
        data = self.keyseal.unseal(_DEMO_SEAL_ID, blob) if blob is not None else None
        try:
            loaded = orjson.loads(data) if data is not None else {}
        except orjson.JSONDecodeError:
            loaded = {}
        return loaded if isinstance(loaded, dict) else {}

    async def save_demo(self, data: dict[str, Any]) -> None:
        await self.redis.set(self._k("demo"), self.keyseal.seal(_DEMO_SEAL_ID, orjson.dumps(data)))

    # typed reads (redis-py's annotations cover both decoded and raw replies; this client is raw)

    async def _get(self, key: str) -> bytes | None:
        value = await self.redis.get(key)
        return _bytes(value) if value is not None else None

    async def _hget(self, key: str, field: str) -> bytes | None:
        value = await self.redis.hget(key, field)
        return _bytes(value) if value is not None else None

    async def _hgetall(self, key: str) -> dict[bytes, bytes]:
        return {_bytes(k): _bytes(v) for k, v in (await self.redis.hgetall(key)).items()}

    async def _zrange(self, key: str) -> list[str]:
        return [_bytes(v).decode() for v in await self.redis.zrange(key, 0, -1)]

    async def _smembers(self, key: str) -> list[str]:
        return [_bytes(v).decode() for v in await self.redis.smembers(key)]

    # internals

    async def _insert_key(
        self, record: KeyRecord, *, secret_enc: bytes | None, value_hash: bytes | None
    ) -> None:
        fields: dict[str, str | bytes] = {"row": _key_row(record), "mac": self.keyseal.mac(record)}
        if secret_enc is not None:
            fields["secret_enc"] = secret_enc
        if value_hash is not None:
            fields["value_hash"] = value_hash
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hset(self._k("key", record.key_id), mapping=fields)  # type: ignore[arg-type]
            tx.zadd(self._k("keys", record.cid), {record.key_id: record.created_at})
            if value_hash is not None:
                tx.set(self._k("webkey", value_hash.hex()), record.key_id)
            await tx.execute()

    def _key_from_hash(self, key_id: str, row: dict[bytes, bytes]) -> KeyRecord | None:
        """The record if its MAC verifies under master.key; a tampered entry is logged and ignored."""
        def read() -> tuple[Any, ...]:
            body = orjson.loads(row[b"row"])
            return (body["cid"], body["type"], body["algorithm"], body["origins"], body["grants"],
                    body["max_participants"], body["public_key"], body["revoked"], body["created_at"])

        return self.keyseal.open_record(key_id, read, row.get(b"mac", b""))


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _key_row(record: KeyRecord) -> bytes:
    return orjson.dumps({
        "cid": record.cid, "type": record.type, "algorithm": record.algorithm,
        "origins": list(record.origins),
        "grants": record.grants.to_wire(), "max_participants": record.max_participants,
        "public_key": record.public_key, "revoked": record.revoked, "created_at": record.created_at,
    })

