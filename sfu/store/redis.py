"""The shared store for many nodes (`--redis URL`): the `Store` of sfu/store/base.py on Redis.

Every node of a cluster reads the same clients, keys, webhooks, persisted pipeline messages and recording
metadata, so any node verifies any token and sees a revocation at once (nothing is cached).

Secrets are protected exactly as in the SQLite store, by `master.key` in each node's data directory
(the same 32 bytes on every node: copy the first node's file): HS256 secrets are encrypted with it
(AES-GCM, the key_id as associated data), web-only key values are stored only as an HMAC, and every key
carries a MAC over what decides access. Whoever reads or edits Redis alone therefore gets no usable
secret and cannot widen a key. Redis also keeps an HMAC of the master key itself (`meta`), so a node
started with a different `master.key` refuses to start instead of treating every key as tampered.

Layout (all under the prefix, default `sfu:`): `client:<cid>` hash, `client-names` hash name -> cid,
`clients` zset by creation; `key:<key_id>` hash (row JSON, mac, secret_enc, value_hash), `keys:<cid>`
zset, `webkey:<hmac hex>` -> key_id; `seq:<group>` counter, `msgs:<group>` zset by seq, `msgts:<group>`
zset seq by timestamp, `pipes:<cid,session>` set, `msggroups` set (pruning); `webhook:<id>` hash,
`webhooks:<cid>` zset; `rec:<id>` JSON, `recs:<cid>` zset, `recs-live:<owner>` set of running ones.
A group is the JSON array `[cid, session, pipeline]`, so no name can collide with another.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.exceptions import RedisError

from sfu.auth.identity import Grants
from sfu.auth.keys import normalize_origin_patterns
from sfu.errors import BadRequest, Conflict, NotFound
from sfu.store.base import (
    ClientRecord,
    KeyAlgorithm,
    KeyRecord,
    RecordingRecord,
    StoredMessage,
    WebhookRecord,
)
from sfu.store.sqlite import (
    ALGORITHMS,
    HISTORY_PER_PIPELINE,
    MAX_PAGE,
    check_public_key,
    load_master_key,
    new_id,
)

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


def master_check(master: bytes) -> bytes:
    """What Redis keeps to recognize the master key (an HMAC under it, never the key)."""
    return hmac.new(master, b"sfu-master-check", hashlib.sha256).digest()


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
        self._master = b""
        self._append: Any = None
        self._prune: Any = None

    # lifecycle

    async def open(self) -> None:
        if self._redis is not None:
            return
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        client = aioredis.Redis.from_url(self.url, decode_responses=False)
        try:
            await client.ping()
            self._master = await self._load_master(client)
        except RedisError as exc:
            await client.aclose()
            raise RuntimeError(f"cannot use Redis at {self.url}: {exc}") from None
        except BaseException:
            await client.aclose()
            raise
        self._append = client.register_script(_APPEND_LUA)
        self._prune = client.register_script(_PRUNE_LUA)
        self._redis = client

    async def _load_master(self, client: aioredis.Redis) -> bytes:
        meta = self.prefix + "meta"
        known = await client.hget(meta, "master_check")
        path = self.data_dir / "master.key"
        if known is None:
            master = load_master_key(self.data_dir, create=True)
            if await client.hsetnx(meta, "master_check", master_check(master)):
                log.info("initialized the shared store at %s (prefix %r)", self.url, self.prefix)
                return master
            known = await client.hget(meta, "master_check")  # another node initialized it meanwhile
        elif not path.exists():
            raise RuntimeError(
                f"{path} is missing: the keys in Redis ({self.url}) were written under another node's "
                "master.key; copy that file here (mode 0600)"
            )
        master = load_master_key(self.data_dir, create=False)
        if not hmac.compare_digest(master_check(master), _bytes(known or b"")):
            raise RuntimeError(
                f"{path} is not the master.key the keys in Redis ({self.url}) were written with; "
                "every node of a cluster needs the same file"
            )
        return master

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("store is not open")
        return self._redis

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # clients

    async def create_client(self, name: str) -> ClientRecord:
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise BadRequest("client name must be 1-200 characters")
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
        if algorithm not in ALGORITHMS:
            raise BadRequest(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        await self._require_client(cid)
        key_id = new_id("k")
        secret: str | None = None
        secret_enc: bytes | None = None
        if algorithm == "HS256":
            if public_key is not None:
                raise BadRequest("an HS256 key has no public key")
            secret = "sk_" + secrets.token_urlsafe(32)
            nonce = secrets.token_bytes(12)
            secret_enc = nonce + AESGCM(self._master).encrypt(nonce, secret.encode(), key_id.encode())
        elif public_key is None:
            raise BadRequest(f"an {algorithm} key needs a public key (PEM)")
        else:
            public_key = check_public_key(algorithm, public_key)
        record = KeyRecord(key_id, cid, "secret", algorithm, public_key=public_key, created_at=time.time())
        await self._insert_key(record, secret_enc=secret_enc, value_hash=None)
        return record, secret

    async def create_web_key(
        self, cid: str, origins: tuple[str, ...], grants: Grants, max_participants: int | None = None
    ) -> tuple[KeyRecord, str]:
        if grants.admin:
            raise BadRequest("a web-only key cannot grant admin")
        if max_participants is not None and (type(max_participants) is not int or max_participants < 1):
            raise BadRequest("max_participants must be a positive integer")
        origins = normalize_origin_patterns(origins)
        await self._require_client(cid)
        value = "wk_" + secrets.token_urlsafe(24)
        record = KeyRecord(new_id("k"), cid, "web_only", "HS256", origins, grants, max_participants,
                           created_at=time.time())
        await self._insert_key(record, secret_enc=None, value_hash=self._value_hash(value))
        return record, value

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = await self._hgetall(self._k("key", key_id))
        return self._key_from_hash(key_id, row) if row else None

    async def key_secret(self, key_id: str) -> bytes | None:
        row = await self._hgetall(self._k("key", key_id))
        record = self._key_from_hash(key_id, row) if row else None
        if record is None or record.revoked or record.algorithm != "HS256" or record.type != "secret":
            return None
        blob = row.get(b"secret_enc", b"")
        try:
            return AESGCM(self._master).decrypt(blob[:12], blob[12:], key_id.encode())
        except (InvalidTag, ValueError):
            log.warning("secret of key %s does not decrypt with master.key; treated as invalid", key_id)
            return None

    async def find_web_key(self, key_value: str) -> KeyRecord | None:
        value_hash = self._value_hash(key_value)
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
                              mapping={"row": _key_row(revoked), "mac": self._key_mac(revoked)})
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
        limit = max(1, min(int(limit), MAX_PAGE))
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
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048:
            raise BadRequest("webhook url must be an http:// or https:// url")
        key = await self.get_key(key_id)
        if key is None or key.cid != cid or key.type != "secret" or key.algorithm != "HS256" or key.revoked:
            raise BadRequest("webhook key must be a live HS256 secret key of the same client")
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

    async def _require_client(self, cid: str) -> None:
        if await self.get_client(cid) is None:
            raise NotFound(f"client {cid!r} not found")

    def _value_hash(self, value: str) -> bytes:
        return hmac.new(self._master, b"web-key\0" + value.encode(), hashlib.sha256).digest()

    def _key_mac(self, record: KeyRecord) -> bytes:
        """The same MAC as the SQLite store's, over what decides access."""
        signed = [record.key_id, record.cid, record.type, record.algorithm, list(record.origins),
                  record.grants.to_wire(), record.max_participants, record.public_key, record.revoked]
        return hmac.new(self._master, b"key-row\0" + orjson.dumps(signed), hashlib.sha256).digest()

    async def _insert_key(
        self, record: KeyRecord, *, secret_enc: bytes | None, value_hash: bytes | None
    ) -> None:
        fields: dict[str, str | bytes] = {"row": _key_row(record), "mac": self._key_mac(record)}
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
        try:
            body = orjson.loads(row[b"row"])
            record = KeyRecord(key_id, body["cid"], body["type"], body["algorithm"], tuple(body["origins"]),
                               Grants.from_wire(body["grants"]), body["max_participants"], body["public_key"],
                               bool(body["revoked"]), float(body["created_at"]))
            valid = hmac.compare_digest(self._key_mac(record), row.get(b"mac", b""))
        except (KeyError, ValueError, TypeError, BadRequest, orjson.JSONDecodeError):
            valid = False
        if not valid:
            log.warning("key %s fails its integrity check (edited outside the server?), ignored", key_id)
            return None
        return record


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _key_row(record: KeyRecord) -> bytes:
    return orjson.dumps({
        "cid": record.cid, "type": record.type, "algorithm": record.algorithm,
        "origins": list(record.origins),
        "grants": record.grants.to_wire(), "max_participants": record.max_participants,
        "public_key": record.public_key, "revoked": record.revoked, "created_at": record.created_at,
    })

