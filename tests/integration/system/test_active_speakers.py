"""Active speakers come from the RFC 6464 audio levels publishers put on their packets (no decoding)."""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import av
import numpy as np
from aiortc import MediaStreamTrack

from client_sdk import ActiveSpeakers
from client_sdk.events import FeedPublished
from tests.integration.system.conftest import Sessions
from tests.support import Credentials, RunningServer

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
