"""VP9 (non-SVC) end to end with real Chromium: a page publishes its camera with VP9 preferred
(setCodecPreferences), the server answers VP9 and forwards the RTP untouched, a second page decodes it.

Chromium packetizes VP9 in flexible mode (RFC 9628 F bit, picture id, layer indices, P_DIFFs), with
temporal layers when it chooses to: the server's key-frame detection must find its key frames (a
subscriber starts only on one), and the recorder's depacketizer must rebuild frames a VP9 decoder takes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import av
import pytest

from sfu.media.publisher import PublisherTransport
from sfu.media.receiver import Receiver
from sfu.media.rtp import SEQ_MASK, payload_bounds
from sfu.recording.depacketize import Depacketizer
from tests.browser.chromium import evaluate_until, needs_chromium
from tests.support import Credentials, RunningServer

PAGE = Path(__file__).parent / "pages" / "vp9_peer.html"

pytestmark = [pytest.mark.browser, needs_chromium]


def vp9_receiver(server: RunningServer) -> Receiver:
    receivers = [
        r
        for t in server.server.media.transports
        if isinstance(t, PublisherTransport)
        for r in t.receivers_by_mid.values()
    ]
    assert [r.codec for r in receivers] == ["video/VP9"]
    return receivers[0]


def ring_packets(receiver: Receiver) -> list[bytes]:
    """The newest run of consecutive packets the server holds for NACKs, oldest first."""
    out: list[bytes] = []
    seq = receiver.highest_seq
    for _ in range(receiver.ring.size):
        packet = receiver.ring.get(seq)
        if packet is None:
            break
        out.append(packet)
        seq = (seq - 1) & SEQ_MASK
    return out[::-1]


@pytest.mark.parametrize("mode", ["", "L1T3"])
async def test_chromium_publishes_vp9_and_another_chromium_decodes_it_through_the_server(
    server: RunningServer, creds: Credentials, page_url: str, browser: Any, mode: str
) -> None:
    """`mode`: Chrome's default (L1T1 here), or three temporal layers, all forwarded."""
    publisher = await browser.new_page()
    subscriber = await browser.new_page()
    await publisher.goto(page_url)
    await subscriber.goto(page_url)
    published = await publisher.evaluate(
        "([u, t, m]) => window.publishVp9(u, t, m)", [server.ws_url, creds.token("room", "cam"), mode]
    )
    assert len(published["feeds"]) == 1
    assert "VP9/90000" in published["answer"] and "VP8" not in published["answer"]
    viewer = creds.token("room", "viewer")
    await subscriber.evaluate("([u, t]) => window.subscribe(u, t)", [server.ws_url, viewer])
    first = await evaluate_until(
        subscriber, "window.videoStats('in')", lambda s: bool(s) and s["framesDecoded"] > 30, timeout_s=20
    )
    assert first["codec"] == "video/VP9" and "profile-id=0" in first["fmtp"]
    later = await evaluate_until(
        subscriber, "window.videoStats('in')", lambda s: s["framesDecoded"] > first["framesDecoded"] + 30,
        timeout_s=10,
    )
    sent = await publisher.evaluate("window.videoStats('out')")
    print("publisher", sent, "subscriber", later)
    assert sent["codec"] == "video/VP9" and sent["scalabilityMode"] == (mode or "L1T1")

    receiver = vp9_receiver(server)
    assert receiver.key_frames >= 1  # the forwarder started on one: detection works on Chrome's packets
    key_frames = receiver.key_frames
    receiver.request_key_frame(time.monotonic_ns())
    for _ in range(50):
        if receiver.key_frames > key_frames:
            break
        await asyncio.sleep(0.1)
    assert receiver.key_frames > key_frames, "a PLI to Chrome produced no detected VP9 key frame"
    await asyncio.sleep(0.5)
    packets = ring_packets(receiver)
    media = [p for p in packets if payload_bounds(p, p[0])[0] < payload_bounds(p, p[0])[1]]  # no padding
    descriptors = [p[payload_bounds(p, p[0])[0]] for p in media]
    assert all(d & 0x10 for d in descriptors), "Chrome's VP9 is expected in flexible mode (F bit)"
    assert any(d & 0x20 for d in descriptors) is bool(mode), "layer indices (L) only with temporal layers"

    depacketizer = Depacketizer("video/VP9")
    frames = [f for p in media for f in depacketizer.push(p)] + depacketizer.flush()
    assert frames and frames[0].key_frame
    decoder: Any = av.CodecContext.create("libvpx-vp9", "r")
    decoded = [
        frame for f in frames for packet in decoder.parse(f.data) for frame in decoder.decode(packet)
    ]
    decoded += decoder.decode(None)
    assert len(decoded) >= len(frames) - 1 and decoded[0].width == later["frameWidth"]
