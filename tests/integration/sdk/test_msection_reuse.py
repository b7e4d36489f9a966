"""Subscriber m-sections are recycled: a feed that comes and goes 20 times does not grow the offer.

A real client_sdk subscriber (aiortc, decoding) stays in the room while another participant publishes
and unpublishes a camera 20 times; a third one publishes a camera all along, so two video m-sections
share a payload type (aiortc must route the reused mid's new SSRC by SSRC, not by payload type).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest

from client_sdk import FeedPublished, FeedUnpublished, Session
from client_sdk.encoded import EncodedVideoTrack
from loadtest.media import encode_vp8
from sfu.media.subscriber import SubscriberTransport
from tests.integration.sdk.conftest import Sessions
from tests.support import Credentials, RunningServer, wait_until

CYCLES = 20


def subscriber_transports(server: RunningServer) -> list[SubscriberTransport]:
    return [t for t in server.server.media.transports if isinstance(t, SubscriberTransport)]


def client_media_sections(session: Session) -> int:
    subscriber = session._subscriber
    assert subscriber is not None and subscriber.pc.remoteDescription is not None
    sdp = subscriber.pc.remoteDescription.sdp
    return sum(1 for line in sdp.splitlines() if line.startswith(("m=audio", "m=video")))


async def frame_of_size(session: Session, feed_id: str, width: int, timeout_s: float = 10) -> av.VideoFrame:
    """The first decoded frame `width` wide (the shared track may still hold frames of earlier feeds)."""
    remote = await session.subscribe(feed_id)
    async with asyncio.timeout(timeout_s):
        while True:
            frame = await remote.track.recv()
            if isinstance(frame, av.VideoFrame) and frame.width == width:
                return frame


async def test_publish_unpublish_cycles_reuse_the_subscribers_m_section(
    media_server: RunningServer, sessions: Sessions, creds: Credentials, tmp_path: Path
) -> None:
    cycling = encode_vp8(320, 180, 15, 2.0, 300_000, 0.5, cache_dir=tmp_path)
    last = encode_vp8(160, 96, 15, 2.0, 200_000, 0.5, cache_dir=tmp_path)
    steady = encode_vp8(240, 136, 15, 2.0, 200_000, 0.5, cache_dir=tmp_path)
    bob = await sessions.connect(token=creds.token("room", "bob"))
    events = bob.events()
    carol = await sessions.connect(token=creds.token("room", "carol"), auto_subscribe=False)
    carol_feed = await carol.publish(EncodedVideoTrack(steady))
    assert (await events.next(FeedPublished)).feed.feed_id == carol_feed.feed_id
    alice = await sessions.connect(token=creds.token("room", "alice"), auto_subscribe=False)
    [bob_transport] = subscriber_transports(media_server)

    feed_id = ""
    for cycle in range(CYCLES):
        feed = await alice.publish(EncodedVideoTrack(last if cycle == CYCLES - 1 else cycling))
        feed_id = feed.feed_id
        assert (await events.next(FeedPublished)).feed.feed_id == feed_id
        await wait_until(lambda: len(bob_transport.forwarders) == 2 and bob_transport.reusable_sections == 0)
        assert bob_transport.media_sections == 2, f"cycle {cycle}: a new m-section instead of a reused one"
        if cycle == CYCLES - 1:
            break
        await alice.unpublish(feed_id)
        assert (await events.next(FeedUnpublished)).feed_id == feed_id
        await wait_until(lambda: bob_transport.reusable_sections == 1)  # bob answered it inactive

    await wait_until(lambda: client_media_sections(bob) == 2)
    frame = await frame_of_size(bob, feed_id, 160)
    assert frame.height == 96
    assert (await frame_of_size(bob, carol_feed.feed_id, 240)).height == 136
    forwarders = {f.receiver.codec: f for f in bob_transport.forwarders}
    assert set(forwarders) == {"video/VP8"} and all(f.packets > 0 for f in bob_transport.forwarders)


@pytest.mark.parametrize("resubscribe_first", [True, False])
async def test_a_resubscribe_keeps_its_own_m_section_and_ssrc(
    media_server: RunningServer,
    sessions: Sessions,
    creds: Credentials,
    tmp_path: Path,
    resubscribe_first: bool,
) -> None:
    """The feed that left an m-section gets it back with its SSRC (continuity) unless another took it."""
    clip = encode_vp8(160, 96, 15, 2.0, 200_000, 0.5, cache_dir=tmp_path)
    bob = await sessions.connect(token=creds.token("room", "bob"), auto_subscribe=False)
    alice = await sessions.connect(token=creds.token("room", "alice"), auto_subscribe=False)
    first = await alice.publish(EncodedVideoTrack(clip))
    await wait_until(lambda: first.feed_id in bob.feeds_by_id)
    await bob.subscribe(first.feed_id)
    [transport] = subscriber_transports(media_server)
    [forwarder] = transport.forwarders
    ssrc = forwarder.ssrc
    await bob.unsubscribe(first.feed_id)
    await wait_until(lambda: transport.reusable_sections == 1)
    second = await alice.publish(EncodedVideoTrack(clip))
    await wait_until(lambda: second.feed_id in bob.feeds_by_id)
    order = [first.feed_id, second.feed_id] if resubscribe_first else [second.feed_id, first.feed_id]
    for feed_id in order:
        await bob.subscribe(feed_id)
    by_feed = {f.receiver: f for f in transport.forwarders}
    assert len(by_feed) == 2 and transport.media_sections == 2
    again = next(f for f in transport.forwarders if f.ssrc == ssrc) if resubscribe_first else None
    if resubscribe_first:
        assert again is forwarder  # same forwarder: seq and timestamps continue
    else:
        assert all(f.ssrc != ssrc for f in transport.forwarders)  # the reused mid announced new SSRCs
    for feed_id, width in ((first.feed_id, 160), (second.feed_id, 160)):
        assert (await frame_of_size(bob, feed_id, width)).height == 96
