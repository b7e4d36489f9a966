"""A later offer on the same publisher transport: new mids become tracks, mids no longer sent stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiortc import RTCSessionDescription

from sfu.media import bridge
from sfu.media.engine import MediaEngine
from tests.integration.media.peers import (
    LOOPBACK,
    ClientPeer,
    PacketTrack,
    encode_opus,
    encode_vp8,
    wait_until,
)


async def test_publisher_renegotiation_adds_new_mids_and_stops_missing_ones(
    engine: MediaEngine, new_client: Callable[[], ClientPeer]
) -> None:
    client = new_client()
    pub = engine.create_publisher()
    audio = PacketTrack("audio", encode_opus(150))
    first = await client.publish(pub, [audio])
    assert [(t.mid, t.kind) for t in first] == [("0", "audio")]
    audio.go.set()
    await wait_until(lambda: first[0].receiver.packets > 10 and pub.rtcp_packets_out > 0)

    video = PacketTrack("video", encode_vp8(90))
    client.pc.addTransceiver(video, direction="sendonly")
    client.pc.getTransceivers()[0].direction = "inactive"
    offer = await client.pc.createOffer()
    with bridge.ice_hosts_scope(LOOPBACK):
        await client.pc.setLocalDescription(offer)
    answer, tracks = await pub.negotiate(client.pc.localDescription.sdp)
    await client.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    assert [(t.mid, t.kind) for t in tracks] == [("1", "video")]
    assert "0" not in pub.receivers_by_mid
    assert first[0].receiver.forwarders == ()
    video.go.set()
    await wait_until(lambda: tracks[0].receiver.key_frames > 0)
    assert bridge.decoder_threads_running() == []


async def test_data_channels_share_the_publisher_transport_with_media(
    engine: MediaEngine, new_client: Callable[[], ClientPeer]
) -> None:
    client = new_client()
    pub = engine.create_publisher()
    channels: list[Any] = []
    pub.on_data_channel = channels.append
    channel = client.pc.createDataChannel("reliable")
    video = PacketTrack("video", encode_vp8(90))
    tracks = await client.publish(pub, [video])
    video.go.set()
    await wait_until(lambda: channel.readyState == "open" and tracks[0].receiver.key_frames > 0)
    await wait_until(lambda: len(channels) == 1)
    got: list[Any] = []
    channels[0].on("message", got.append)
    channel.send(b"\x00\x02{}hello")
    await wait_until(lambda: got == [b"\x00\x02{}hello"])
    assert channels[0].label == "reliable"


async def test_server_data_channel_on_the_subscriber_transport_reaches_the_client(
    engine: MediaEngine, new_client: Callable[[], ClientPeer]
) -> None:
    publisher = new_client()
    video = PacketTrack("video", encode_vp8(90))
    tracks = await publisher.publish(engine.create_publisher(), [video])
    sub = engine.create_subscriber()
    channel = sub.create_data_channel("lossy", ordered=False, max_retransmits=0)
    sub.add(tracks[0].receiver, tag="cam")
    client = new_client()
    remote: list[Any] = []
    client.pc.on("datachannel", remote.append)
    await client.answer(sub)
    video.go.set()
    await wait_until(lambda: channel.readyState == "open" and client.received.frames["video"] > 5)
    assert [c.label for c in remote] == ["lossy"]
