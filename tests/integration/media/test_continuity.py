"""Per-subscriber seq/ts continuity across unsubscribe/resubscribe and mute, and late joiners."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from sfu.media.engine import MediaEngine
from sfu.media.publisher import PublishedTrack
from sfu.media.subscriber import SubscriberTransport
from tests.integration.media.peers import ClientPeer, PacketTrack, encode_opus, encode_vp8, wait_until


async def _publish(engine: MediaEngine, client: ClientPeer) -> tuple[list[PublishedTrack], list[PacketTrack]]:
    sources = [PacketTrack("video", encode_vp8(90)), PacketTrack("audio", encode_opus(150))]
    tracks = await client.publish(engine.create_publisher(), list(sources))
    return tracks, sources


async def _subscribe(
    engine: MediaEngine, client: ClientPeer, tracks: list[PublishedTrack]
) -> SubscriberTransport:
    sub = engine.create_subscriber()
    for track in tracks:
        sub.add(track.receiver, tag=track.mid)
    await client.answer(sub)
    await wait_until(lambda: sub.sink.connected)
    return sub


def _assert_contiguous(seqs: list[int]) -> None:
    assert seqs, "no packets"
    expected = [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    assert seqs == expected


async def test_three_subscribers_see_continuous_seqs_across_unsubscribe_and_resubscribe(
    engine: MediaEngine, new_client: Callable[[], ClientPeer]
) -> None:
    tracks, sources = await _publish(engine, new_client())
    video = next(t for t in tracks if t.kind == "video")
    clients = [new_client() for _ in range(3)]
    subs = [await _subscribe(engine, c, tracks) for c in clients]
    for source in sources:
        source.go.set()
    await asyncio.sleep(1.0)

    forwarder = next(f for f in subs[1].forwarders if f.receiver is video.receiver)
    subs[1].remove(forwarder)
    tags = await clients[1].answer(subs[1])
    assert forwarder.mid not in tags
    await asyncio.sleep(0.5)
    assert subs[1].add(video.receiver, tag=video.mid) is forwarder
    await clients[1].answer(subs[1])
    before = forwarder.packets
    await wait_until(lambda: forwarder.packets > before + 30)

    for sub, client in zip(subs, clients, strict=True):
        f = next(f for f in sub.forwarders if f.receiver is video.receiver)
        seqs = client.received.seqs(f.ssrc)
        _assert_contiguous(seqs)
        assert len(seqs) > 60
        assert sum(f.drops) == f.drops[5] + f.drops[8]  # only waiting-for-key-frame / before-start


async def test_late_subscriber_decodes_its_first_frame_within_one_second(
    engine: MediaEngine, new_client: Callable[[], ClientPeer]
) -> None:
    tracks, sources = await _publish(engine, new_client())
    for source in sources:
        source.go.set()
    await asyncio.sleep(1.3)
    late = new_client()
    started = time.monotonic()
    sub = await _subscribe(engine, late, tracks)
    connected = time.monotonic()
    await wait_until(lambda: "video" in late.received.first_frame_at, within_s=3.0)
    first_frame = late.received.first_frame_at["video"]
    assert first_frame - connected < 1.0, (first_frame - started, first_frame - connected)
    assert sub.forwarders[0].receiver.plis_out >= 1


async def test_mute_and_unmute_leave_no_timestamp_jump(
    engine: MediaEngine, new_client: Callable[[], ClientPeer]
) -> None:
    tracks, sources = await _publish(engine, new_client())
    client = new_client()
    sub = await _subscribe(engine, client, tracks)
    for source in sources:
        source.go.set()
    await asyncio.sleep(1.0)
    for track in tracks:
        track.receiver.set_muted(True)
    await asyncio.sleep(1.0)
    for track in tracks:
        track.receiver.set_muted(False)
    await asyncio.sleep(1.0)

    for f in sub.forwarders:
        rtp = [(at, seq, ts) for at, ssrc, seq, ts in client.received.rtp if ssrc == f.ssrc]
        _assert_contiguous([seq for _, seq, _ in rtp])
        gaps = [
            (b[0] - a[0], ((b[2] - a[2]) & 0xFFFFFFFF) / f.clock_rate) for a, b in itertools.pairwise(rtp)
        ]
        wall_gap, ts_gap = max(gaps)
        assert wall_gap > 0.9  # the mute
        assert abs(ts_gap - wall_gap) < 0.1, (f.kind, wall_gap, ts_gap)
        assert all(0 <= ts < 0.2 for wall, ts in gaps if wall < 0.5)  # no jump anywhere else
