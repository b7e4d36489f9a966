"""Sessions placed on nodes through Redis: the `Placement` of sfu/cluster/placement.py across nodes.

`place:<[cid, sid]>` holds the id of the node that owns a session. The first join claims it atomically
(SET if absent, with an expiry: first join wins); the owner refreshes the expiry while the session
lives and deletes the key when it ends, so the placement expires with the session, and with the node if
the node dies. A join through another node relays to the owner (or, with `--redirect`, sends the client
there). A placement whose owner is gone (its heartbeat expired, or it refused the relay) is taken over
with a compare-and-set, so the sessions of a dead node come back on the node their next join reaches.

`placed:<cid>` (a zset of sid by expiry) lets any node's admin API list every session of a client.
On the owner, the session goes to a local worker through the wrapped local placement.

A new session goes to the node its first join reaches, unless that node is draining or full (every
worker at or above `max_worker_cpu`, as its heartbeat reports); then to the least loaded node that is
neither. When every node is full the join is refused (`AtCapacity`) and nothing is claimed; a node that
claimed a session and then finds its workers full releases the claim at once, so a retry is placed anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sfu.cluster.placement import AtCapacity, NoTarget, Placement, Target
from sfu.cluster.redis_nodes import NodeInfo, NodeRegistry

log = logging.getLogger("sfu.cluster.placement")

PLACEMENT_TTL_S = 15.0
REFRESH_S = 3.0
CLAIM_GRACE_S = 15.0
"""A placement claimed here whose session has not shown up yet is kept this long (the join is on its way)."""
RELAYED_HEADER = "X-Sfu-Relayed-By"
"""Set on sockets and requests one node relays to another: the receiver serves them itself (one hop)."""

# KEYS: place, index. ARGV: node, ttl_ms, sid, expires_at_ms, replaceable owner ("" for none).
# Returns the owner after the call.
_CLAIM_LUA = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or (ARGV[5] ~= '' and cur == ARGV[5]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  return ARGV[1]
end
return cur
"""
# KEYS: place, index. ARGV: node, ttl_ms, sid, expires_at_ms. 1 if still ours (and extended), else 0.
_REFRESH_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  return 1
end
return 0
"""
# KEYS: place, index. ARGV: node, sid. Deletes the placement only if it is still ours.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def choose_node(nodes: Iterable[NodeInfo], region: str) -> NodeInfo | None:
    """The least loaded node taking new sessions (neither draining nor full), of `region` if one is."""
    open_nodes = [n for n in nodes if not n.draining and not n.full]
    same = [n for n in open_nodes if n.region == region] or open_nodes
    return min(same, key=lambda n: (n.cpu, n.participants, n.node_id), default=None)


@dataclass(frozen=True, slots=True)
class PlacedSession:
    cid: str
    sid: str
    node_id: str


class RedisPlacement:
    """`locate()` answers a local worker (through `local`) when this node owns the session, else a
    `Target` naming the owning node (its public URL, `name` = node id)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        nodes: NodeRegistry,
        local: Placement,
        *,
        live_sessions: Callable[[], Iterable[tuple[str, str]]],
        prefix: str = "sfu:",
        ttl_s: float = PLACEMENT_TTL_S,
        refresh_s: float = REFRESH_S,
        draining: Callable[[], bool] = lambda: False,
        full: Callable[[], bool] = lambda: False,
        claim_grace_s: float = CLAIM_GRACE_S,
    ) -> None:
        self.redis = redis
        self.nodes = nodes
        self.local = local
        self.node_id = nodes.node_id
        self.live_sessions = live_sessions
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.refresh_s = refresh_s
        self.draining = draining
        self.full = full
        """Whether every local worker is at or above `max_worker_cpu` (no new session here)."""
        self.claim_grace_s = claim_grace_s
        self.claimed: dict[tuple[str, str], float] = {}
        """Sessions placed here, with when they were claimed or last seen live."""
        self.takeovers = 0
        self._unreachable: dict[str, float] = {}
        self._claim = redis.register_script(_CLAIM_LUA)
        self._refresh = redis.register_script(_REFRESH_LUA)
        self._release = redis.register_script(_RELEASE_LUA)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    # -- keys --------------------------------------------------------------------------------------------

    def _place_key(self, cid: str, sid: str) -> str:
        return f"{self.prefix}place:{orjson.dumps([cid, sid]).decode()}"

    def _index_key(self, cid: str) -> str:
        return f"{self.prefix}placed:{cid}"

    # -- Placement ---------------------------------------------------------------------------------------

    async def locate(self, cid: str, sid: str) -> Target:
        try:
            return await self._locate(cid, sid)
        except (RedisError, OSError) as exc:  # the front tells the client to come back (1012)
            log.warning("placement of %s/%s failed: Redis: %s", cid, sid, exc)
            raise NoTarget(f"Redis unavailable: {exc}") from None

    async def _locate(self, cid: str, sid: str) -> Target:
        owner = await self.owner(cid, sid, claim=True)
        assert owner is not None
        for _ in range(3):
            if owner == self.node_id:
                self.claimed.setdefault((cid, sid), time.monotonic())
                return await self._locate_here(cid, sid)
            info = await self._live(owner)
            if info is not None:
                return self._node_target(info)
            log.info("session %s/%s was on node %s, which is gone: taking it over", cid, sid, owner)
            previous, owner = owner, await self._claim_for(cid, sid, await self._choose(), replace=owner)
            if owner != previous:
                self.takeovers += 1
        raise NoTarget(f"no live node owns {cid}/{sid}")

    async def _locate_here(self, cid: str, sid: str) -> Target:
        try:
            return await self.local.locate(cid, sid)
        except AtCapacity:
            # NOTE: only a session new to this node's workers is refused, so no participant is here:
            # release the claim now, else retries through any node would land here until the grace ends
            await self.release(cid, sid)
            raise

    async def lost(self, target: Target) -> None:
        """A node that refused the relay counts as gone until its next heartbeat is older than the refusal."""
        if target.name.startswith("n_"):
            self._unreachable[target.name] = time.time()
        else:
            await self.local.lost(target)

    def targets(self) -> Sequence[Target]:
        return self.local.targets()

    # -- queries -----------------------------------------------------------------------------------------

    async def owner(self, cid: str, sid: str, *, claim: bool = False) -> str | None:
        """The node id owning (cid, sid); with `claim`, this node (or the chosen one) claims it if free."""
        if not claim:
            raw = await self.redis.get(self._place_key(cid, sid))
            return _text(raw) if raw is not None else None
        current = await self.redis.get(self._place_key(cid, sid))
        if current is not None:
            return _text(current)
        return await self._claim_for(cid, sid, await self._choose(), replace="")

    async def sessions_of(self, cid: str) -> list[PlacedSession]:
        """Every live placement of `cid` on any node (the admin API's list), by sid."""
        index = self._index_key(cid)
        now_ms = int(time.time() * 1000)
        await self.redis.zremrangebyscore(index, "-inf", now_ms)
        sids = [_text(s) for s in await self.redis.zrange(index, 0, -1)]
        if not sids:
            return []
        owners = await self.redis.mget([self._place_key(cid, sid) for sid in sids])
        return [PlacedSession(cid, sid, _text(owner)) for sid, owner in zip(sids, owners, strict=True)
                if owner is not None]

    # -- placement policy --------------------------------------------------------------------------------

    async def _choose(self) -> str:
        """Where a new session goes: this node (the first join's entry point) unless it is draining or
        full, else `choose_node` among the other live nodes. Raises AtCapacity when every node is full."""
        draining = self.draining()
        if not draining and not self.full():
            return self.node_id
        others = [n for n in await self.nodes.nodes() if n.node_id != self.node_id and self._reachable(n)]
        best = choose_node(others, self.nodes.region)
        if best is not None:
            return best.node_id
        if draining:
            return self.node_id  # nowhere else: its workers answer the refusal
        raise AtCapacity("server at capacity, try again later")

    async def _claim_for(self, cid: str, sid: str, node_id: str, *, replace: str) -> str:
        expires = int((time.time() + self.ttl_s) * 1000)
        owner = _text(await self._claim(
            keys=[self._place_key(cid, sid), self._index_key(cid)],
            args=[node_id, int(self.ttl_s * 1000), sid, expires, replace],
        ))
        if owner == self.node_id:
            self.claimed.setdefault((cid, sid), time.monotonic())
        return owner

    async def _live(self, node_id: str) -> NodeInfo | None:
        info = await self.nodes.get(node_id)
        return info if info is not None and self._reachable(info) else None

    def _reachable(self, info: NodeInfo) -> bool:
        refused_at = self._unreachable.get(info.node_id)
        if refused_at is not None:
            if info.updated_at <= refused_at + 0.5:  # no heartbeat since it refused us: treat as gone
                return False
            del self._unreachable[info.node_id]
        return True

    def _node_target(self, info: NodeInfo) -> Target:
        return Target(ws_url=info.ws_url, http_url=info.url, name=info.node_id,
                      headers={RELAYED_HEADER: self.node_id})

    # -- upkeep ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="redis-placement-refresh")

    async def close(self, *, release: bool = True) -> None:
        """Stops refreshing and releases every placement held here (their sessions end with the node);
        without `release` they live out their expiry, as after a crash."""
        task, self._task = self._task, None
        self._stop.set()
        if task is not None:
            await task
        if not release:
            return
        for cid, sid in list(self.claimed):
            with contextlib.suppress(RedisError, OSError):
                await self.release(cid, sid)

    async def _run(self) -> None:
        # NOTE: stopped through `_stop`, never cancelled: a command cut by a cancel spoils its connection
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.refresh_s)
                return
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.warning("refreshing placements failed: %s", exc)

    async def refresh(self) -> None:
        """Extends the placements of live sessions; releases those whose session ended."""
        now = time.monotonic()
        live = set(self.live_sessions())
        for key in live:
            self.claimed[key] = now
        expires = int((time.time() + self.ttl_s) * 1000)
        for (cid, sid), seen in list(self.claimed.items()):
            if (cid, sid) not in live and now - seen > self.claim_grace_s:
                await self.release(cid, sid)
                continue
            ours = await self._refresh(keys=[self._place_key(cid, sid), self._index_key(cid)],
                                       args=[self.node_id, int(self.ttl_s * 1000), sid, expires])
            if not ours:
                # NOTE: taken over while we looked dead (e.g. a long pause); the participants here stay,
                # new joins go to the new owner.
                log.warning("session %s/%s is now placed on another node", cid, sid)
                self.claimed.pop((cid, sid), None)

    async def release(self, cid: str, sid: str) -> None:
        self.claimed.pop((cid, sid), None)
        await self._release(keys=[self._place_key(cid, sid), self._index_key(cid)], args=[self.node_id, sid])
