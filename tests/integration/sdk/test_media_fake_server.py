"""The SDK's media code (both transports, decoded and raw subscriptions) against an aiortc stand-in server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import av
import pytest
from aiortc import AudioStreamTrack

import client_sdk
from client_sdk import RawFeed
from tests.integration.sdk.fake_media import FakeMediaServer, fake_media_server
from tests.integration.sdk.test_media import ColorBars


@pytest.fixture
async def fake() -> AsyncIterator[FakeMediaServer]:
    async with fake_media_server() as running:
        yield running


async def test_published_video_is_decoded_by_a_subscriber_over_loopback(fake: FakeMediaServer) -> None:
    async with (
        await client_sdk.connect(fake.url, key="wk_x", session="s", uid="alice") as alice,
        await client_sdk.connect(fake.url, key="wk_x", session="s", uid="bob") as bob,
    ):
        video, audio = await alice.publish_many(
            [(ColorBars(), "camera", None), (AudioStreamTrack(), None, None)]
        )
        assert (video.source, audio.source) == ("camera", "microphone")
        remote = await bob.subscribe(video.feed_id)
        frame = await remote.track.recv()
        assert isinstance(frame, av.VideoFrame) and (frame.width, frame.height) == (320, 240)
        sound = await (await bob.subscribe(audio.feed_id)).track.recv()
        assert isinstance(sound, av.AudioFrame)


async def test_a_raw_subscription_yields_rtp_of_one_ssrc(fake: FakeMediaServer) -> None:
    async with (
        await client_sdk.connect(fake.url, key="wk_x", session="s", uid="alice") as alice,
        await client_sdk.connect(fake.url, key="wk_x", session="s", uid="rec") as recorder,
    ):
        video = await alice.publish(ColorBars())
        raw = await recorder.subscribe(video.feed_id, decode=False)
        assert isinstance(raw, RawFeed) and raw.codec == "video/VP8"
        await raw.request_key_frame()
        packets = []
        async for packet in raw.packets():
            packets.append(packet)
            if len(packets) == 20:
                break
        assert len({p.ssrc for p in packets}) == 1
        assert all(p.payload_type == 97 or p.payload for p in packets)


async def test_a_second_publish_renegotiates_and_keeps_the_first_feed(fake: FakeMediaServer) -> None:
    async with await client_sdk.connect(fake.url, key="wk_x", session="s", uid="alice") as alice:
        first = await alice.publish(ColorBars())
        second = await alice.publish(AudioStreamTrack())
        assert first.feed_id != second.feed_id
        assert [f.feed_id for f in alice.local_feeds] == [first.feed_id, second.feed_id]
