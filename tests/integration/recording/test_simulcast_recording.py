"""A simulcast feed is recorded at its highest arriving layer: f, down to h when f stops, back up to f.

The publisher is the raw-RTP three-layer VP8 publisher of the media tests (tests/integration/media/
simulcast_peer.py: its own SSRC, seq space and timestamp offset per layer, PLIs answered with a key
frame), negotiated through the server's real signaling as a participant. The file must hold only frames
the publisher sent (codec copy), change picture size at the switches, decode without a single error and
keep one increasing timeline whose span is the wall-clock time recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import av
import pytest

import client_sdk
from client_sdk.admin import AdminClient
from sfu.media.publisher import PublisherTransport
from tests.integration.media.simulcast_peer import SimulcastPublisher
from tests.integration.recording.probe import decode_errors, probe, require_ffprobe
from tests.integration.sdk.conftest import Sessions
from tests.support import Credentials, RunningServer, wait_until

SIZES = ((160, 96), (320, 192), (640, 384))
STRETCH_S = 2.5


@pytest.fixture
async def sessions(server: RunningServer) -> AsyncIterator[Sessions]:
    opened = Sessions(server.url)
    try:
        yield opened
    finally:
        await opened.close_all()


class SignalingPublish:
    """What `SimulcastPublisher.publish` needs of a transport, through a participant's `publish` request."""

    def __init__(self, session: client_sdk.Session) -> None:
        self.session = session
        self.feed_id = ""

    async def negotiate(self, offer: str) -> tuple[str, list[Any]]:
        mid = re.search(r"^a=mid:(\S+)", offer, re.M)
        assert mid is not None
        reply = await self.session._request("publish", sdp=offer,
                                            feeds=[{"mid": mid.group(1), "source": "camera", "name": "cam"}])
        self.feed_id = str(reply["feeds"][0]["feed_id"])
        answer = str(reply["sdp"])
        pt = re.search(r"^a=rtpmap:(\d+) VP8/90000", answer, re.M | re.I)
        assert pt is not None, answer
        return answer, [SimpleNamespace(receiver=SimpleNamespace(payload_type=int(pt.group(1))))]


def decoded(path: Path) -> tuple[list[bytes], list[tuple[float, int, int]]]:
    """Every packet's bytes and every decoded picture's (pts s, width, height)."""
    packets: list[bytes] = []
    pictures: list[tuple[float, int, int]] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base
        assert time_base is not None
        for packet in container.demux(stream):
            if not packet.size:
                continue
            packets.append(bytes(packet))
            for frame in packet.decode():
                assert frame.pts is not None
                pictures.append((float(frame.pts * time_base), frame.width, frame.height))
    return packets, pictures


def runs(values: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


async def test_a_simulcast_feed_is_recorded_at_its_top_layer_falling_back_and_back_up_on_key_frames(
    server: RunningServer, creds: Credentials, sessions: Sessions, tmp_path: Path
) -> None:
    require_ffprobe()
    cam = await sessions.connect(token=creds.token("room", "cam"), auto_subscribe=False)
    publisher = SimulcastPublisher(SIZES)
    signaling = SignalingPublish(cam)
    try:
        await publisher.publish(cast(PublisherTransport, signaling))
        await wait_until(lambda: publisher.sink.connected, timeout_s=15)
        publisher.start()
        session = server.server.registry.get(creds.cid, "room")
        assert session is not None and session.media is not None
        media = session.media

        def all_layers() -> bool:
            head = media.receivers_by_feed.get(signaling.feed_id)
            return head is not None and head.active_mask == 0b111

        await wait_until(all_layers, timeout_s=15)
        async with AdminClient(server.url, creds.admin_token()) as admin:
            recording_id = await admin.start_recording("room")
            await asyncio.sleep(STRETCH_S)
            publisher.active.discard(2)  # the top layer stops arriving: fall back to h
            await asyncio.sleep(STRETCH_S)
            publisher.active.add(2)  # it is back: up to f on its next key frame
            await asyncio.sleep(STRETCH_S)
            stopped_at = time.time()
            result = await admin.stop_recording("room", recording_id)
            (entry,) = result["files"]
            path = tmp_path / entry["name"]
            path.write_bytes(await admin.download_recording_file(recording_id, entry["name"]))
    finally:
        await publisher.close()

    assert entry["state"] == "complete" and entry["codec"] == "video/VP8"
    assert entry["layer_switches"] == 2, entry
    assert decode_errors(path) == ""
    packets, pictures = decoded(path)
    sent = {frame for layer in publisher.layers for frame in layer.frames}
    assert all(p in sent for p in packets), "recorded frames must be the published ones, byte for byte"
    assert len(pictures) == len(packets) == entry["frames"]
    assert runs([(w, h) for _, w, h in pictures]) == [SIZES[2], SIZES[1], SIZES[2]]

    times = [t for t, _, _ in pictures]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) > 0, "timestamps must increase through the switches"
    switch_down = next(i for i, (_, w, _) in enumerate(pictures) if w == SIZES[1][0])
    switch_up = next(i for i in range(switch_down, len(pictures)) if pictures[i][1] == SIZES[2][0])
    # down: f stopped, nothing arrives until the server notices (< 1 s) and h's next key frame;
    # up: h goes on until f's key frame, so no gap at all
    assert gaps[switch_down - 1] < 1.3, gaps[switch_down - 1]
    assert gaps[switch_up - 1] < 0.1, gaps[switch_up - 1]
    assert max(g for i, g in enumerate(gaps) if i != switch_down - 1) < 0.1
    # one timeline: the file spans the wall-clock time it covers
    found = await probe(path)
    assert found.format_duration is not None
    assert abs(found.format_duration - entry["duration_ms"] / 1000) <= 0.1
    assert abs((entry["started_at"] + found.span_s) - stopped_at) <= 0.3
    print(f"{len(pictures)} frames, {found.span_s:.2f} s; fall back after {gaps[switch_down - 1]:.2f} s; "
          f"sizes {runs([(w, h) for _, w, h in pictures])}")
