"""The forward path end to end with real aiortc peers over 127.0.0.1 (server in-process)."""

from __future__ import annotations

from collections.abc import Callable

from sfu.media import bridge
from sfu.media.consent import TOTALS as CONSENT_TOTALS
from sfu.media.engine import MediaEngine
from tests.integration.media.peers import ClientPeer, PacketTrack, encode_opus, encode_vp8, wait_until

VIDEO_FRAMES = 90


async def test_subscriber_decodes_every_video_frame_and_audio(
    engine: MediaEngine, new_client: Callable[[], ClientPeer]
) -> None:
    video = PacketTrack("video", encode_vp8(VIDEO_FRAMES), limit=VIDEO_FRAMES)
    audio = PacketTrack("audio", encode_opus(150), limit=150)
    publisher = new_client()
    pub = engine.create_publisher()
    tracks = await publisher.publish(pub, [video, audio])
    assert sorted((t.kind, t.codec.lower()) for t in tracks) == [
        ("audio", "audio/opus"),
        ("video", "video/vp8"),
    ]

    subscriber = new_client()
    sub = engine.create_subscriber()
    forwarders = [sub.add(t.receiver, tag=f"feed-{t.mid}") for t in tracks]
    tags = await subscriber.answer(sub)
    assert sorted(tags.values()) == sorted(f"feed-{t.mid}" for t in tracks)
    await wait_until(lambda: sub.sink.connected and pub.sink.connected)
    video.go.set()
    audio.go.set()

    received = subscriber.received
    await wait_until(lambda: received.frames["video"] >= VIDEO_FRAMES - 2 and received.frames["audio"] >= 100)
    assert bridge.decoder_threads_running() != []  # the subscribing client decodes; the server never does
    video_receiver = next(t.receiver for t in tracks if t.kind == "video")
    assert video_receiver.packets > VIDEO_FRAMES
    assert all(f.packets > 0 for f in forwarders)
    for transport in (pub, sub):  # SRTP datagrams skip aioice's queue (bridge.bypass_ice_queue)
        protocols = transport._hooked[0].transport._connection._protocols
        assert protocols and all(getattr(p, "_sfu_bypass", False) for p in protocols)
    await sub.close()
    await pub.close()


async def test_server_starts_no_decoder_for_a_published_feed(
    engine: MediaEngine, new_client: Callable[[], ClientPeer]
) -> None:
    video = PacketTrack("video", encode_vp8(VIDEO_FRAMES))
    publisher = new_client()
    pub = engine.create_publisher()
    tracks = await publisher.publish(pub, [video])
    video.go.set()
    await wait_until(lambda: tracks[0].receiver.packets > 50)
    assert bridge.decoder_threads_running() == []
    assert tracks[0].receiver.key_frames >= 1


async def test_subscriber_losses_are_repaired_by_rtx_from_the_ring(
    engine: MediaEngine, new_client: Callable[[], ClientPeer]
) -> None:
    video = PacketTrack("video", encode_vp8(VIDEO_FRAMES), limit=VIDEO_FRAMES)
    publisher = new_client()
    pub = engine.create_publisher()
    tracks = await publisher.publish(pub, [video])
    subscriber = new_client()
    subscriber.drop_every = 25
    sub = engine.create_subscriber()
    forwarder = sub.add(tracks[0].receiver, tag="v")
    await subscriber.answer(sub)
    assert forwarder.rtx_payload_type == 98
    await wait_until(lambda: sub.sink.connected and pub.sink.connected)
    video.go.set()
    await wait_until(lambda: subscriber.received.frames["video"] >= VIDEO_FRAMES - 2)
    assert subscriber.dropped > 5
    assert forwarder.retransmissions >= subscriber.dropped - 2
    assert forwarder.nacks_in > 0
    rtx = [p for p in subscriber.received.rtp if p[1] == forwarder.rtx_ssrc]
    assert len(rtx) == forwarder.retransmissions
    assert sub.rtcp_packets_out > 0 and pub.rtcp_packets_out > 0


async def test_consent_checks_on_the_nominated_pair_are_answered_by_the_fast_path(
    engine: MediaEngine, new_client: Callable[[], ClientPeer]
) -> None:
    """The clients' aioice checks consent every ~5 s (RFC 7675); the server answers those on the
    nominated pair itself (sfu/media/consent.py, byte-identical to aioice: tests/unit/media/test_consent.py)
    and the session carries on."""
    video = PacketTrack("video", encode_vp8(VIDEO_FRAMES))
    publisher = new_client()
    pub = engine.create_publisher()
    tracks = await publisher.publish(pub, [video])
    subscriber = new_client()
    sub = engine.create_subscriber()
    sub.add(tracks[0].receiver, tag="feed")
    await subscriber.answer(sub)
    await wait_until(lambda: sub.sink.connected and pub.sink.connected)
    video.go.set()
    before = CONSENT_TOTALS.answered
    await wait_until(lambda: CONSENT_TOTALS.answered >= before + 2, within_s=20)  # one per peer, ~5 s
    frames = subscriber.received.frames["video"]
    await wait_until(lambda: subscriber.received.frames["video"] >= frames + 10)
    assert pub.sink.connected and sub.sink.connected
