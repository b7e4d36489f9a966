"""Nodes of a cluster (`--redis URL`): each registers itself in Redis with a TTL heartbeat.

`node:<id>` holds the node's JSON record (public URL, region, load, whether it is `full`) and expires
`ttl_s` after the last heartbeat, so a node that dies (killed, partitioned) disappears from `nodes()`
within `ttl_s` without anyone cleaning up after it; `nodes` is a zset of ids by last heartbeat, pruned by
whoever lists them. A record without `full` (an older node's) reads as not full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("sfu.cluster.nodes")

HEARTBEAT_S = 1.0
NODE_TTL_S = 4.0
"""A node missing this long is dead for placement; its sessions are taken over on their next join."""


def new_node_id() -> str:
    return f"n_{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class NodeLoad:
    sessions: int = 0
    participants: int = 0
    cpu: float = 0.0  # cores busy (sum over this node's media processes)
    draining: bool = False
    full: bool = False  # every worker at or above `max_worker_cpu`: no new session here


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    url: str  # public http(s) base URL of the node; its signaling is url + /v1/rtc over ws(s)
    region: str
    sessions: int = 0
    participants: int = 0
    cpu: float = 0.0
    draining: bool = False
    started_at: float = 0.0
    updated_at: float = 0.0
    full: bool = False  # absent in reports of older nodes: not full

    @property
    def ws_url(self) -> str:
        base = self.url.rstrip("/")
        if base.startswith("https://"):
            return "wss://" + base[len("https://"):] + "/v1/rtc"
        return "ws://" + base.removeprefix("http://") + "/v1/rtc"

    def to_wire(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> NodeInfo:
        body = orjson.loads(raw)
        return cls(**{k: body[k] for k in cls.__dataclass_fields__ if k in body})


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NodeRegistry:
    """This node's registration (`start()` .. `close()`) and the view of every live node."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        node_id: str,
        url: str,
        region: str = "",
        prefix: str = "sfu:",
        load: Callable[[], NodeLoad] = NodeLoad,
        heartbeat_s: float = HEARTBEAT_S,
        ttl_s: float = NODE_TTL_S,
    ) -> None:
        self.redis = redis
        self.node_id = node_id
        self.url = url.rstrip("/")
        self.region = region
        self.prefix = prefix
        self.load = load
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s
        self.started_at = time.time()
        self.heartbeats_failed = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def _key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def info(self) -> NodeInfo:
        load = self.load()
        return NodeInfo(self.node_id, self.url, self.region, load.sessions, load.participants, load.cpu,
                        load.draining, self.started_at, time.time(), load.full)

    async def heartbeat(self) -> None:
        info = self.info()
        async with self.redis.pipeline(transaction=True) as tx:
            tx.set(self._key(self.node_id), orjson.dumps(info.to_wire()), px=int(self.ttl_s * 1000))
            tx.zadd(f"{self.prefix}nodes", {self.node_id: info.updated_at})
            await tx.execute()

    async def start(self) -> None:
        """Registers now (so a failure to reach Redis fails the start), then keeps the heartbeat."""
        await self.heartbeat()
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="redis-node-heartbeat")
        log.info("node %s registered as %s (region %r)", self.node_id, self.url, self.region)

    async def _run(self) -> None:
        # NOTE: stopped through `_stop`, never cancelled: a command cut by a cancel spoils its connection
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.heartbeat_s)
                return
            try:
                await self.heartbeat()
            except (RedisError, OSError) as exc:
                self.heartbeats_failed += 1
                log.warning("node heartbeat failed: %s", exc)

    async def close(self, *, deregister: bool = True) -> None:
        """Stops the heartbeat and deregisters at once (others stop placing sessions here); without
        `deregister` the record lives out its TTL, as after a crash."""
        task, self._task = self._task, None
        self._stop.set()
        if task is not None:
            await task
        if not deregister:
            return
        with contextlib.suppress(RedisError, OSError):
            async with self.redis.pipeline(transaction=True) as tx:
                tx.delete(self._key(self.node_id))
                tx.zrem(f"{self.prefix}nodes", self.node_id)
                await tx.execute()

    async def get(self, node_id: str) -> NodeInfo | None:
        raw = await self.redis.get(self._key(node_id))
        return NodeInfo.from_json(_text(raw)) if raw is not None else None

    async def nodes(self) -> list[NodeInfo]:
        """Every node whose heartbeat is live, by id; ids whose record expired are pruned."""
        ids = [_text(i) for i in await self.redis.zrange(f"{self.prefix}nodes", 0, -1)]
        if not ids:
            return []
        raws = await self.redis.mget([self._key(i) for i in ids])
        live, gone = [], []
        for node_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                gone.append(node_id)
            else:
                live.append(NodeInfo.from_json(_text(raw)))
        if gone:
            await self.redis.zrem(f"{self.prefix}nodes", *gone)
        return sorted(live, key=lambda n: n.node_id)
