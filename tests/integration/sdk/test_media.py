"""MEDIA tests: publish and subscribe through the server with real aiortc peers.

They need the server's media glue (`publish`/`subscribe` handlers); until it is wired they are SKIPPED
with the reason "server has no media yet", and they are expected to pass once it is.
"""

from __future__ import annotations

import asyncio
import fractions
import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc import AudioStreamTrack, VideoStreamTrack

from client_sdk import (
    FeedPublished,
    FeedUnpublished,
    FeedUpdated,
    ParticipantLeft,
    RawFeed,
    Reconnected,
    Reconnecting,
)
from sfu.signaling.ws import DISPATCHER_KEY
from tests.integration.sdk.conftest import Sessions, TcpProxy
from tests.support import Credentials, RunningServer, start_server


class ColorBars(VideoStreamTrack):
    """A 320x240 test picture, encoded by aiortc: media tests need no file and no other module."""

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.zeros((240, 320, 3), dtype=np.uint8)
        image[:, :160] = (255, 0, 0)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


async def test_a_subscriber_decodes_frames_of_a_published_video_and_audio_feed(
    media_server: RunningServer, sessions: Sessions, creds: Credentials
) -> None:
    bob = await sessions.connect(token=creds.token("room", "bob"), auto_subscribe=False)
    events = bob.events()
    alice = await sessions.connect(token=creds.token("room", "alice"))
    video, audio = await alice.publish_many(
        [(ColorBars(), "camera", "cam"), (AudioStreamTrack(), None, None)]
    )
    assert video.feed_id and audio.feed_id and video.feed_id != audio.feed_id
    published = {(await events.next(FeedPublished)).feed.feed_id for _ in range(2)}
    assert published == {video.feed_id, audio.feed_id}
    remote_video = await bob.subscribe(video.feed_id)
    remote_audio = await bob.subscribe(audio.feed_id)
    frame = await remote_video.track.recv()
    assert isinstance(frame, av.VideoFrame) and (frame.width, frame.height) == (320, 240)
    sound = await remote_audio.track.recv()
    assert isinstance(sound, av.AudioFrame) and sound.time_base == fractions.Fraction(1, sound.sample_rate)
    await video.unpublish()
    await audio.unpublish()


async def test_a_raw_subscription_yields_the_rtp_packets_of_the_feed(
    media_server: RunningServer, sessions: Sessions, creds: Credentials
) -> None:
    recorder = await sessions.connect(
        token=creds.token("room", "rec", grants={"hidden": True}), auto_subscribe=False
    )
    events = recorder.events()
    alice = await sessions.connect(token=creds.token("room", "alice"))
    video = await alice.publish(ColorBars())
    await events.next(FeedPublished)
    raw = await recorder.subscribe(video.feed_id, decode=False)
    assert isinstance(raw, RawFeed) and raw.codec == "video/VP8"
    await raw.request_key_frame()
    packets = []
    async for packet in raw.packets():
        packets.append(packet)
        if len(packets) == 20:
            break
    assert len({p.ssrc for p in packets}) == 1
    assert all(p.payload for p in packets)
    await recorder.unsubscribe(video.feed_id)


def write_webm(path: Path, frames: int = 30) -> None:
    """A short VP8 WebM made with PyAV, so the test needs no checked-in media."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for index in range(frames):
            image = np.full((240, 320, 3), index * 8 % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.mark.skipif(
    importlib.util.find_spec("client_sdk.encoded") is None, reason="client_sdk/encoded.py absent"
)
async def test_a_pre_encoded_file_is_published_without_re_encoding(
    media_server: RunningServer, sessions: Sessions, creds: Credentials, tmp_path: Path
) -> None:
    path = tmp_path / "clip.webm"
    write_webm(path)
    bob = await sessions.connect(token=creds.token("room", "bob"), auto_subscribe=False)
    events = bob.events()
    alice = await sessions.connect(token=creds.token("room", "alice"))
    publication = await alice.publish_file(path)
    await events.next(FeedPublished)
    remote = await bob.subscribe(publication.feed_id)
    frame = await remote.track.recv()
    assert isinstance(frame, av.VideoFrame) and (frame.width, frame.height) == (320, 240)


async def test_a_reconnect_after_the_resume_window_publishes_and_subscribes_again(
    tmp_path: Path,
) -> None:
    async with start_server(tmp_path / "data", resume_window_s=0.3) as running:
        if "publish" not in running.app[DISPATCHER_KEY].routes_by_type:
            pytest.skip("server has no media yet (no publish handler registered)")
        creds = await running.credentials()
        proxy = TcpProxy(running.port)
        await proxy.start()
        opened = Sessions(running.url)
        try:
            bob = await opened.connect(token=creds.token("room", "bob"), auto_subscribe=False)
            bob_events = bob.events()
            alice = await opened.connect(proxy.url, token=creds.token("room", "alice"))
            video = await alice.publish(ColorBars())
            first_id = video.feed_id
            await bob_events.next(FeedPublished)
            events = alice.events()
            proxy.refusing = True
            proxy.drop()
            await bob_events.next(ParticipantLeft)
            proxy.refusing = False
            reconnected = await events.next(Reconnected, timeout_s=20)
            assert reconnected.resumed is False
            assert video.feed_id and video.feed_id != first_id
            published = await bob_events.next(FeedPublished)
            assert published.feed.feed_id == video.feed_id
            remote = await bob.subscribe(video.feed_id)
            async with asyncio.timeout(10):
                assert isinstance(await remote.track.recv(), av.VideoFrame)
        finally:
            await opened.close_all()
            await proxy.close()


async def test_an_auto_subscribed_feed_can_be_taken_decoded_or_raw(
    media_server: RunningServer, sessions: Sessions, creds: Credentials
) -> None:
    bob = await sessions.connect(token=creds.token("room", "bob"))
    alice = await sessions.connect(token=creds.token("room", "alice"))
    video = await alice.publish(ColorBars())
    remote = await bob.subscribe(video.feed_id)
    async with asyncio.timeout(10):
        assert isinstance(await remote.track.recv(), av.VideoFrame)
    raw = await bob.subscribe(video.feed_id, decode=False)
    await raw.request_key_frame()
    async with asyncio.timeout(10):
        packet = await anext(aiter(raw.packets()))
    assert packet.payload


async def test_mute_and_unpublish_reach_the_other_participants(
    media_server: RunningServer, sessions: Sessions, creds: Credentials
) -> None:
    bob = await sessions.connect(token=creds.token("room", "bob"), auto_subscribe=False)
    events = bob.events()
    alice = await sessions.connect(token=creds.token("room", "alice"))
    video = await alice.publish(ColorBars(), name="cam")
    published = await events.next(FeedPublished)
    assert (published.feed.uid, published.feed.source, published.feed.name) == ("alice", "camera", "cam")
    remote = await bob.subscribe(video.feed_id)
    async with asyncio.timeout(10):
        assert isinstance(await remote.track.recv(), av.VideoFrame)
    await remote.set_quality(max_width=160, max_height=120)
    await video.mute()
    updated = await events.next(FeedUpdated)
    assert updated.feed.muted is True and bob.feeds_by_id[video.feed_id].muted is True
    await video.unpublish()
    gone = await events.next(FeedUnpublished)
    assert gone.feed_id == video.feed_id
    assert not remote.active and video.feed_id not in bob.feeds_by_id


async def test_a_server_shutdown_makes_the_sdk_rejoin_the_next_server_and_republish(tmp_path: Path) -> None:
    """`closed {reason: "server_shutdown", reconnect: true}` is not the end: the SDK rejoins (a rolling
    restart behind a load balancer, here a proxy re-pointed at the new server) and republishes."""
    data_dir = tmp_path / "data"
    proxy = TcpProxy(0)
    await proxy.start()
    opened = Sessions(proxy.url)
    try:
        async with start_server(data_dir) as first:
            creds = await first.credentials()
            proxy.target_port = first.port
            alice = await opened.connect(token=creds.token("room", "alice"))
            events = alice.events()
            video = await alice.publish(ColorBars())
            first_id = video.feed_id
        await events.next(Reconnecting, timeout_s=10)
        async with start_server(data_dir) as second:
            proxy.target_port = second.port
            reconnected = await events.next(Reconnected, timeout_s=30)
            assert reconnected.resumed is False and not alice.closed
            assert video.feed_id and video.feed_id != first_id
            bob = await opened.connect(second.url, token=creds.token("room", "bob"), auto_subscribe=False)
            assert video.feed_id in bob.feeds_by_id
            remote = await bob.subscribe(video.feed_id)
            async with asyncio.timeout(10):
                assert isinstance(await remote.track.recv(), av.VideoFrame)
    finally:
        await opened.close_all()
        await proxy.close()
