"""Bandwidth-aware layer selection over a shaped link: the subscriber is a real peer inside a test network
namespace (netns_peer.py: aiortc + a transport-wide CC receiver), the publisher sends a simulcast triple
(simulcast_peer.py) and Opus audio over loopback, and `tc tbf` caps the subscriber's downlink.

Functional thresholds from the simulcast issue: capped to 400 kbit/s the subscriber is on the lowest layer
within 10 s and keeps decoding with < 2% frozen time; uncapped it is back on the top layer within 20 s;
at 150 kbit/s video pauses and audio keeps flowing.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sfu.media.engine import MediaEngine
from sfu.media.forwarder import Forwarder
from sfu.media.probe import BANDWIDTH_TOTALS
from sfu.media.subscriber import SubscriberTransport
from tests.integration.media.peers import LOOPBACK, ClientPeer, PacketTrack, encode_opus, wait_until
from tests.integration.media.simulcast_peer import SimulcastPublisher
from tests.nethost import NetHost

REPO = Path(__file__).resolve().parents[3]
SIZES = ((160, 96), (320, 192), (640, 384))

pytestmark = pytest.mark.netns


def frozen_fraction(times: list[float], start: float, end: float) -> float:
    """Share of [start, end] spent in freezes: a gap between decoded frames longer than
    max(3 x the mean frame interval, mean + 150 ms) (the WebRTC stats definition of a freeze)."""
    inside = [t for t in times if start <= t <= end]
    if len(inside) < 2:
        return 1.0
    mean = (inside[-1] - inside[0]) / (len(inside) - 1)
    limit = max(3 * mean, mean + 0.150)
    frozen = sum(b - a for a, b in itertools.pairwise([start, *inside, end]) if b - a > limit)
    return frozen / (end - start)


class NamespacePeer:
    """netns_peer.py in the test host, negotiated through its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, host: NetHost) -> NamespacePeer:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", host.name, sys.executable, "-m", "tests.integration.media.netns_peer",
            cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        return cls(proc)

    async def answer(self, transport: SubscriberTransport) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        offer, _tags = await transport.create_offer()
        self.proc.stdin.write(orjson.dumps({"sdp": offer}) + b"\n")
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        await transport.set_answer(orjson.loads(line)["sdp"])

    async def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"quit\n")
        out, _ = await asyncio.wait_for(self.proc.communicate(), 30)
        result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
        return result

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def lan_engine(net_host: NetHost) -> AsyncIterator[MediaEngine]:
    engine = MediaEngine(ice_hosts=(*LOOPBACK, net_host.gateway))
    yield engine
    await engine.close()


async def test_capped_subscriber_drops_to_the_lowest_layer_recovers_and_pauses_video_not_audio(
    net_host: NetHost, lan_engine: MediaEngine
) -> None:
    publisher = SimulcastPublisher(SIZES)
    speaker = ClientPeer()
    peer = await NamespacePeer.start(net_host)
    timeline: list[str] = []  # printed with the results: what the allocator saw, second by second
    watcher: asyncio.Task[None] | None = None
    try:
        video_pub = lan_engine.create_publisher()
        audio_pub = lan_engine.create_publisher()
        head = (await publisher.publish(video_pub))[0].receiver
        tone = PacketTrack("audio", encode_opus(250))
        voice = (await speaker.publish(audio_pub, [tone]))[0].receiver
        sub = lan_engine.create_subscriber()
        forwarder: Forwarder = sub.add(head, tag="cam")
        changes: list[tuple[float, str, str, bool]] = []  # what participant_media sends as layer_changed
        forwarder.on_layer_changed = lambda f, rid, reason: changes.append(
            (time.monotonic(), rid, reason, f.bandwidth_paused)
        )
        sub.add(voice, tag="mic")
        await peer.answer(sub)
        assert sub.sink.twcc_id and sub.sink.abs_id  # transport-cc negotiated
        await wait_until(lambda: sub.sink.connected and publisher.sink.connected, within_s=20)
        publisher.start()
        tone.go.set()
        layer = forwarder.selector

        def estimate() -> int:
            return sub.allocator.bwe.estimate_bps(time.monotonic_ns() // 1_000_000)

        async def watch() -> None:
            while True:
                await asyncio.sleep(1)
                bitrates = [r.bitrate_bps // 1000 for r in head.layers]
                timeline.append(f"layer {layer.current_layer}/{layer.target_layer} paused {forwarder.paused} "
                                f"layers kbit/s {bitrates} {sub.allocator.stats(time.monotonic_ns())}")

        watcher = asyncio.create_task(watch())
        await wait_until(lambda: layer.current_layer == 2, within_s=15)
        marks: dict[str, float] = {}

        # 1. 400 kbit/s: the lowest layer within 10 s, then decoding with < 2% frozen time
        net_host.set_rate(400)
        marks["cap"] = time.monotonic()
        await wait_until(lambda: layer.current_layer == 0, within_s=10, interval=0.1)
        marks["low"] = time.monotonic()
        await asyncio.sleep(10)
        marks["low_end"] = time.monotonic()
        assert layer.current_layer == 0, sub.allocator.stats(time.monotonic_ns())
        low_estimate = estimate()

        # 2. the cap lifted: back on the top layer within 20 s (probes, then upgrades)
        net_host.clear_rate()
        marks["lift"] = time.monotonic()
        await wait_until(lambda: layer.current_layer == 2, within_s=20, interval=0.1)
        marks["top"] = time.monotonic()
        probes_to_top = sub.allocator.probes

        # 3. 150 kbit/s: video pauses, audio keeps flowing
        net_host.set_rate(150)
        marks["squeeze"] = time.monotonic()
        await wait_until(lambda: forwarder.bandwidth_paused, within_s=10, interval=0.1)
        marks["paused"] = time.monotonic()
        await asyncio.sleep(5)
        marks["paused_end"] = time.monotonic()
        assert forwarder.paused, sub.allocator.stats(time.monotonic_ns())
        stats = sub.allocator.stats(time.monotonic_ns())

        # 4. the cap lifted again: video resumes (probes first), announced like the pause
        net_host.clear_rate()
        marks["unsqueeze"] = time.monotonic()
        await wait_until(lambda: not forwarder.bandwidth_paused, within_s=30, interval=0.1)
        marks["resumed"] = time.monotonic()
        result = await peer.finish()
    except BaseException:
        print("\n".join(timeline))
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        net_host.clear_rate()
        await peer.kill()
        await publisher.close()
        await speaker.close()

    video = result["video"]
    frame_times = [t for t, _w, _h in video]
    # the subscriber decodes the lowest layer from its first key frame through the capped link on; the
    # first second after it still repairs what the full queue of the top layer lost (NACK round trips
    # through that queue), then it must keep decoding
    first_low = next(t for t, w, h in video if t >= marks["cap"] and (w, h) == SIZES[0])
    frozen = frozen_fraction(frame_times, first_low + 1.0, marks["low_end"])
    low_sizes = {(w, h) for t, w, h in video if first_low <= t <= marks["low_end"]}
    audio = result["audio"]
    audio_paused = [t for t in audio if marks["paused"] <= t <= marks["paused_end"]]
    video_paused = [t for t in frame_times if marks["paused"] + 1.0 <= t <= marks["paused_end"]]
    print(
        f"lowest layer {marks['low'] - marks['cap']:.1f} s after the 400 kbit/s cap (estimate "
        f"{low_estimate} bit/s), decoded from {first_low - marks['cap']:.1f} s on, frozen {frozen:.2%} over "
        f"the {marks['low_end'] - first_low - 1:.1f} s from a second later; top layer "
        f"{marks['top'] - marks['lift']:.1f} s after the lift ({probes_to_top} probes); video paused "
        f"{marks['paused'] - marks['squeeze']:.1f} s into "
        f"150 kbit/s, audio frames while paused {len(audio_paused)}, resumed "
        f"{marks['resumed'] - marks['unsqueeze']:.1f} s after the lift; {stats}"
    )
    assert first_low - marks["cap"] < 10.0
    assert marks["low_end"] - first_low > 5.0
    assert low_sizes == {SIZES[0]}
    per_second = [sum(1 for t in frame_times if s <= t - marks["cap"] < s + 1) for s in range(12)]
    print("frames per second from the cap on", per_second, "allocator, second by second:", *timeline,
          sep="\n")
    assert frozen < 0.02, frozen
    assert result["feedbacks"] > 0 and stats["mode"] == "twcc"
    assert stats["probe_bytes"] and stats["pauses"]
    assert BANDWIDTH_TOTALS.padding_bytes >= sub.allocator.prober.bytes_sent > 0  # sfu_padding_bytes
    # 20 ms Opus frames: ~50 a second keep coming while the video is paused
    assert len(audio_paused) >= 0.8 * 50 * (marks["paused_end"] - marks["paused"]), len(audio_paused)
    assert not video_paused, "video frames decoded while paused"
    # layer_changed, reason bandwidth: the pause (no rid) in the squeeze, the resume (its layer) after it
    pauses = [t for t, rid, reason, paused in changes if paused and not rid and reason == "bandwidth"]
    resumes = [t for t, rid, reason, paused in changes if not paused and rid and reason == "bandwidth"]
    assert pauses and marks["squeeze"] <= pauses[0] <= marks["paused"] + 1.0, changes
    assert [t for t in resumes if t >= marks["unsqueeze"]], changes
