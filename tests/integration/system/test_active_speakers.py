"""Active speakers come from the RFC 6464 audio levels publishers put on their packets (no decoding)."""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import av
import numpy as np
from aiortc import MediaStreamTrack, VideoStreamTrack

from client_sdk import ActiveSpeakers
from client_sdk.events import FeedPublished, LayerChanged
from tests.integration.system.conftest import Sessions
from tests.support import Credentials, RunningServer, wait_until

SAMPLE_RATE = 48000
SAMPLES = 960  # 20 ms


class Tone(MediaStreamTrack):
    """A 440 Hz tone at `amplitude` (0: silence) in real time; aiortc writes each frame's level to RTP."""

    kind = "audio"

    def __init__(self, amplitude: float) -> None:
        super().__init__()
        t = np.arange(SAMPLES) / SAMPLE_RATE
        self._samples = (amplitude * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16).reshape(1, -1)
        self._start = 0.0
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self._start:
            self._pts += SAMPLES
            await asyncio.sleep(max(self._start + self._pts / SAMPLE_RATE - time.time(), 0))
        else:
            self._start = time.time()
        frame = av.AudioFrame.from_ndarray(self._samples, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


async def test_a_loud_publisher_is_reported_as_the_only_active_speaker(
    server: RunningServer, sessions: Sessions, creds: Credentials
) -> None:
    carol = await sessions.connect(token=creds.token("room", "carol"), auto_subscribe=False)
    events = carol.events()
    alice = await sessions.connect(token=creds.token("room", "alice"), auto_subscribe=False)
    bob = await sessions.connect(token=creds.token("room", "bob"), auto_subscribe=False)
    await alice.publish(Tone(0.8), source="microphone")
    await bob.publish(Tone(0.0), source="microphone")
    for _ in range(2):
        await events.next(FeedPublished)
    speakers = await events.next(ActiveSpeakers, timeout_s=10)
    assert [s.uid for s in speakers.speakers] == ["alice"]
    assert 0 < speakers.speakers[0].level <= 1


async def test_the_allocators_serve_the_active_speakers_video_and_screen_shares_first(
    server: RunningServer, sessions: Sessions, creds: Credentials
) -> None:
    """The session marks carol's forwarders when the speakers change (`Forwarder.speaking`), and a screen
    share by its source, so her stream allocator serves those before the other videos."""
    carol = await sessions.connect(token=creds.token("room", "carol"))
    alice = await sessions.connect(token=creds.token("room", "alice"), auto_subscribe=False)
    bob = await sessions.connect(token=creds.token("room", "bob"), auto_subscribe=False)
    events = carol.events()
    await alice.publish_many([(Tone(0.8), "microphone", None), (VideoStreamTrack(), "camera", None)])
    await bob.publish_many([(Tone(0.0), "microphone", None), (VideoStreamTrack(), "screen", None)])
    await events.next(ActiveSpeakers, timeout_s=10)
    session = server.server.registry.get(creds.cid, "room")
    assert session is not None and session.media is not None
    media = session.media.media_by_uid["carol"]

    def videos() -> dict[tuple[str, str], tuple[bool, bool]]:
        feeds = session.feeds_by_id
        return {
            (feeds[fid].uid, feeds[fid].source): (f.speaking, f.screen)
            for fid, f in media.forwarders_by_feed.items()
            if fid in feeds and f.video
        }

    await wait_until(lambda: len(videos()) == 2, timeout_s=10)
    assert videos() == {("alice", "camera"): (True, False), ("bob", "screen"): (False, True)}
    # a pause for bandwidth reaches the subscriber as layer_changed {rid: null, paused: true}; the
    # allocator's next allocation (the loopback estimate fits it) resumes it: {paused: false}
    screen_id = next(fid for fid in media.forwarders_by_feed if session.feeds_by_id[fid].source == "screen")
    screen = media.forwarders_by_feed[screen_id]
    changes = carol.events()
    assert screen.set_bandwidth_paused(True)
    paused = await changes.next(LayerChanged, lambda e: e.feed_id == screen_id)
    assert (paused.rid, paused.reason, paused.paused) == (None, "bandwidth", True)
    resumed = await changes.next(LayerChanged, lambda e: e.feed_id == screen_id, timeout_s=5)
    assert (resumed.rid, resumed.reason, resumed.paused) == (None, "bandwidth", False)
    assert not screen.paused
