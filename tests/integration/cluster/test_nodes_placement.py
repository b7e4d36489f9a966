"""Session placement and the node registry on a real redis-server, without HTTP: first join wins under
concurrent joins, a placement lives while its session does and expires with it, and a dead node's
sessions are taken over."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from sfu.cluster.placement import AtCapacity, Target
from sfu.cluster.redis_nodes import NodeLoad, NodeRegistry, new_node_id
from sfu.cluster.redis_placement import RELAYED_HEADER, RedisPlacement
from tests.redis_server import redis_missing, redis_server

pytestmark = pytest.mark.skipif(redis_missing() is not None, reason=redis_missing() or "")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@dataclass
class Workers:
    """This node's own placement (the workers' side), as the front's LocalPlacement answers it."""

    name: str
    located: list[tuple[str, str]] = field(default_factory=list)
    live: set[tuple[str, str]] = field(default_factory=set)
    draining: bool = False
    full: bool = False  # every worker at `max_worker_cpu`: new sessions refused, as LocalPlacement does

    async def locate(self, cid: str, sid: str) -> Target:
        if self.full and (cid, sid) not in self.live:
            raise AtCapacity("server at capacity, try again later")
        self.located.append((cid, sid))
        return Target(ws_url=f"ws://{self.name}/v1/rtc", http_url=f"http://{self.name}", name="worker-0")

    async def lost(self, target: Target) -> None:
        pass

    def targets(self) -> Sequence[Target]:
        return []


@dataclass
class Node:
    nodes: NodeRegistry
    placement: RedisPlacement
    workers: Workers

    @property
    def node_id(self) -> str:
        return self.nodes.node_id

    async def close(self) -> None:
        await self.placement.close()
        await self.nodes.close()


@pytest.fixture
async def make_node(redis: aioredis.Redis) -> AsyncIterator[object]:
    prefix = f"test-{secrets.token_hex(4)}:"
    made: list[Node] = []

    async def make(url: str, *, ttl_s: float = 15.0, node_ttl_s: float = 4.0, region: str = "",
                   claim_grace_s: float = 15.0) -> Node:
        node_id = new_node_id()
        workers = Workers(url)
        nodes = NodeRegistry(redis, node_id=node_id, url=url, region=region, prefix=prefix,
                             load=lambda: NodeLoad(sessions=len(workers.live), full=workers.full),
                             heartbeat_s=0.1,
                             ttl_s=node_ttl_s)
        placement = RedisPlacement(redis, nodes, workers, live_sessions=lambda: workers.live, prefix=prefix,
                                   ttl_s=ttl_s, refresh_s=0.1, claim_grace_s=claim_grace_s,
                                   draining=lambda: workers.draining, full=lambda: workers.full)
        await nodes.start()
        placement.start()
        node = Node(nodes, placement, workers)
        made.append(node)
        return node

    yield make
    for node in made:
        await node.close()


async def test_first_join_wins_under_concurrent_joins(make_node: object) -> None:
    make = make_node
    a, b, c = [await make(f"http://node-{i}:7880") for i in range(3)]  # type: ignore[operator]
    joins = [n.placement.locate("c_1", f"room-{room}") for room in range(20) for n in (a, b, c, b, a)]
    targets = await asyncio.gather(*joins)
    for room in range(20):
        mine = targets[room * 5:(room + 1) * 5]
        owner = await a.placement.owner("c_1", f"room-{room}")
        assert owner in {a.node_id, b.node_id, c.node_id}
        owner_node = next(n for n in (a, b, c) if n.node_id == owner)
        # the owner serves it from its workers; every other node points at the owner
        for node, target in zip((a, b, c, b, a), mine, strict=True):
            if node is owner_node:
                assert target.name == "worker-0" and target.ws_url == f"ws://{node.workers.name}/v1/rtc"
            else:
                assert target.name == owner and target.http_url == owner_node.workers.name
                assert target.headers == {RELAYED_HEADER: node.node_id}
    assert {s.sid for s in await b.placement.sessions_of("c_1")} == {f"room-{r}" for r in range(20)}


async def test_a_placement_lives_with_its_session_and_expires_with_it(make_node: object) -> None:
    a = await make_node("http://a:1", ttl_s=0.5, claim_grace_s=0.2)  # type: ignore[operator]
    b = await make_node("http://b:1", ttl_s=0.5)  # type: ignore[operator]
    await a.placement.locate("c_1", "live")
    a.workers.live.add(("c_1", "live"))
    await asyncio.sleep(1.5)  # three placement lifetimes: refreshed while the session lives
    assert (await b.placement.locate("c_1", "live")).name == a.node_id
    a.workers.live.clear()  # the session ended: released after the grace, before the expiry
    await asyncio.sleep(0.4)
    assert await a.placement.owner("c_1", "live") is None
    assert await b.placement.sessions_of("c_1") == []
    assert (await b.placement.locate("c_1", "live")).name == "worker-0"  # now B's own


async def test_a_placement_that_is_not_refreshed_expires(make_node: object) -> None:
    a = await make_node("http://a:1", ttl_s=0.3)  # type: ignore[operator]
    await a.placement.close()  # no refresh from here on: as if the node froze
    await a.placement.locate("c_1", "room")
    assert await a.placement.owner("c_1", "room") == a.node_id
    await asyncio.sleep(0.5)
    assert await a.placement.owner("c_1", "room") is None


async def test_the_sessions_of_a_dead_node_are_taken_over_by_the_next_join(make_node: object) -> None:
    a = await make_node("http://a:1", node_ttl_s=0.4)  # type: ignore[operator]
    b = await make_node("http://b:1", node_ttl_s=0.4)  # type: ignore[operator]
    await a.placement.locate("c_1", "room")
    a.workers.live.add(("c_1", "room"))
    assert (await b.placement.locate("c_1", "room")).name == a.node_id
    # A stops heartbeating without deregistering (killed): its record expires after node_ttl_s
    await a.nodes.close(deregister=False)
    await a.placement.close(release=False)
    await asyncio.sleep(0.6)
    assert [n.node_id for n in await b.nodes.nodes()] == [b.node_id]
    target = await b.placement.locate("c_1", "room")
    assert target.name == "worker-0" and await b.placement.owner("c_1", "room") == b.node_id
    assert b.placement.takeovers == 1


async def test_a_node_that_refused_the_relay_is_skipped_before_its_record_expires(make_node: object) -> None:
    a = await make_node("http://a:1")  # type: ignore[operator]
    b = await make_node("http://b:1")  # type: ignore[operator]
    await a.placement.locate("c_1", "room")
    target = await b.placement.locate("c_1", "room")
    assert target.name == a.node_id
    await a.nodes.close(deregister=False)  # A is gone; its record still looks alive for a while
    await b.placement.lost(target)
    assert (await b.placement.locate("c_1", "room")).name == "worker-0"
    assert await b.placement.owner("c_1", "room") == b.node_id


async def test_nodes_register_with_their_load_and_leave_on_close(make_node: object) -> None:
    a = await make_node("http://a:1/", region="eu")  # type: ignore[operator]
    b = await make_node("https://b:443", region="us")  # type: ignore[operator]
    a.workers.live.add(("c_1", "x"))
    await asyncio.sleep(0.3)
    listed = {n.node_id: n for n in await b.nodes.nodes()}
    assert set(listed) == {a.node_id, b.node_id}
    assert listed[a.node_id].region == "eu" and listed[a.node_id].sessions == 1
    assert listed[a.node_id].ws_url == "ws://a:1/v1/rtc" and listed[b.node_id].ws_url == "wss://b:443/v1/rtc"
    await a.close()
    assert [n.node_id for n in await b.nodes.nodes()] == [b.node_id]


async def test_a_draining_node_places_new_sessions_on_another_node_of_its_region(make_node: object) -> None:
    a = await make_node("http://a:1", region="eu")  # type: ignore[operator]
    b = await make_node("http://b:1", region="us")  # type: ignore[operator]
    c = await make_node("http://c:1", region="eu")  # type: ignore[operator]
    await a.placement.locate("c_1", "before")
    a.workers.draining = True
    await asyncio.sleep(0.4)  # the refresh loop picks the fallback while draining
    target = await a.placement.locate("c_1", "new")
    assert target.name == c.node_id and await b.placement.owner("c_1", "new") == c.node_id
    assert (await a.placement.locate("c_1", "before")).name == "worker-0"  # its own sessions stay
    await c.close()
    await asyncio.sleep(0.4)
    assert (await a.placement.locate("c_1", "newer")).name == b.node_id  # no other eu node: any region


async def test_a_full_node_places_a_new_session_on_a_node_that_is_not(make_node: object) -> None:
    a = await make_node("http://a:1", region="eu")  # type: ignore[operator]
    b = await make_node("http://b:1", region="us")  # type: ignore[operator]
    c = await make_node("http://c:1", region="eu")  # type: ignore[operator]
    a.workers.live.add(("c_1", "before"))
    await a.placement.locate("c_1", "before")
    a.workers.full = True
    c.workers.full = True
    await c.nodes.heartbeat()
    target = await a.placement.locate("c_1", "new")
    assert target.name == b.node_id and await c.placement.owner("c_1", "new") == b.node_id
    assert (await a.placement.locate("c_1", "before")).name == "worker-0"  # its own sessions stay


async def test_when_every_node_is_full_a_new_session_is_refused_and_nothing_is_claimed(
    make_node: object,
) -> None:
    a = await make_node("http://a:1")  # type: ignore[operator]
    b = await make_node("http://b:1")  # type: ignore[operator]
    for node in (a, b):
        node.workers.full = True
        await node.nodes.heartbeat()
    with pytest.raises(AtCapacity, match="server at capacity"):
        await a.placement.locate("c_1", "new")
    assert await b.placement.owner("c_1", "new") is None
    assert await b.placement.sessions_of("c_1") == []
    b.workers.full = False
    await b.nodes.heartbeat()
    assert (await a.placement.locate("c_1", "new")).name == b.node_id  # the retry is placed anew


async def test_a_node_that_took_a_session_and_found_its_workers_full_releases_it_at_once(
    make_node: object,
) -> None:
    a = await make_node("http://a:1")  # type: ignore[operator]
    b = await make_node("http://b:1")  # type: ignore[operator]
    a.workers.full = True
    await a.nodes.heartbeat()
    assert (await a.placement.locate("c_1", "new")).name == b.node_id  # B's last report: not full
    b.workers.full = True  # B filled up before the relayed join reached it
    with pytest.raises(AtCapacity):
        await b.placement.locate("c_1", "new")
    assert await a.placement.owner("c_1", "new") is None
    assert ("c_1", "new") not in b.placement.claimed
