"""Presence: who hears what, and in which order."""

from __future__ import annotations

from tests.integration.signaling.peers import Peers
from tests.support import Credentials, RunningServer


async def test_presence_events_arrive_in_the_order_things_happened(
    server: RunningServer, peers: Peers, creds: Credentials
) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    bob = await peers.join(creds.token("s", "bob", name="Bob"))
    session = server.server.registry.get(creds.cid, "s")
    assert session is not None
    feed = session.add_feed("bob", kind="video", source="camera", name="cam")
    assert (await bob.request("update", name="Bobby"))["type"] == "updated"
    session.update_feed(feed.feed_id, muted=True)
    session.remove_feed(feed.feed_id)
    await bob.send({"type": "leave"})
    await alice.event("participant_left")
    kinds = [f["type"] for f in alice.frames if f["type"] != "pong"]
    assert kinds == ["joined", "participant_joined", "feed_published", "participant_updated", "feed_updated",
                     "feed_unpublished", "participant_left"]
    assert alice.of_type("participant_joined")[0]["participant"]["name"] == "Bob"
    assert alice.of_type("participant_updated")[0]["participant"]["name"] == "Bobby"
    assert alice.of_type("feed_published")[0]["feed"] == {
        "feed_id": feed.feed_id, "uid": "bob", "kind": "video", "source": "camera", "name": "cam",
        "muted": False, "codec": "", "layers": [],
    }


async def test_joined_lists_others_with_their_feeds(
    server: RunningServer, peers: Peers, creds: Credentials,
) -> None:
    await peers.join(creds.token("s", "alice", description={"team": "a"}))
    session = server.server.registry.get(creds.cid, "s")
    assert session is not None
    feed = session.add_feed("alice", kind="audio", source="microphone")
    bob = await peers.join(creds.token("s", "bob"))
    (alice_view,) = bob.joined["participants"]
    assert alice_view["uid"] == "alice"
    assert alice_view["description"] == {"team": "a"}
    assert [f["feed_id"] for f in alice_view["feeds"]] == [feed.feed_id]


async def test_feed_events_honour_the_receivers_subscribe_policy(
    server: RunningServer, peers: Peers, creds: Credentials
) -> None:
    picky = await peers.join(creds.token("s", "picky", policy={"subscribe": ["host*"]}))
    await peers.join(creds.token("s", "guest"))
    await peers.join(creds.token("s", "host-1"))
    session = server.server.registry.get(creds.cid, "s")
    assert session is not None
    session.add_feed("guest", kind="audio", source="microphone")
    host_feed = session.add_feed("host-1", kind="audio", source="microphone")
    published = await picky.event("feed_published")
    assert published["feed"]["feed_id"] == host_feed.feed_id
    assert (await picky.request("ping"))["type"] == "pong"
    assert len(picky.of_type("feed_published")) == 1
