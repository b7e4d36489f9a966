"""Pre-encoded tracks through real aiortc peers on 127.0.0.1: what is sent is what a subscriber decodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aioice.ice
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from client_sdk.encoded import EncodedAudioTrack, EncodedClip, EncodedVideoTrack, from_file
from loadtest.media import encode_h264, encode_opus, encode_vp8, has_h264_encoder

FPS = 15
TS_MASK = 0xFFFFFFFF


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice skips loopback when gathering; give it only 127.0.0.1 so nothing leaves the machine."""

    def hosts(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", hosts)


class Subscriber:
    """A plain aiortc peer that decodes every track it receives, recording frame pts per kind."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pts_by_kind: dict[str, list[int]] = {"audio": [], "video": []}
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        received = self.pts_by_kind[track.kind]
        try:
            while True:
                frame = await track.recv()
                assert frame.pts is not None
                received.append(frame.pts)
        except MediaStreamError:
            return

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def peers(loopback_only: None) -> AsyncIterator[tuple[RTCPeerConnection, Subscriber]]:
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    subscriber = Subscriber()
    yield publisher, subscriber
    await publisher.close()
    await subscriber.close()


async def connect(publisher: RTCPeerConnection, subscriber: RTCPeerConnection) -> None:
    await publisher.setLocalDescription(await publisher.createOffer())
    await subscriber.setRemoteDescription(publisher.localDescription)
    await subscriber.setLocalDescription(await subscriber.createAnswer())
    await publisher.setRemoteDescription(subscriber.localDescription)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)


async def test_a_subscriber_decodes_every_looped_video_frame_sent_and_audio_arrives(
    tmp_path: Path, peers: tuple[RTCPeerConnection, Subscriber]
) -> None:
    publisher, subscriber = peers
    video = EncodedVideoTrack(encode_vp8(320, 180, FPS, 1.0, 300_000, 0.5, cache_dir=tmp_path))
    audio = EncodedAudioTrack(encode_opus(1.0, 32_000, cache_dir=tmp_path))
    publisher.addTrack(video)
    publisher.addTrack(audio)
    await connect(publisher, subscriber.pc)

    decoded = subscriber.pts_by_kind
    await wait_until(lambda: len(decoded["video"]) >= 2 * FPS + 5 and len(decoded["audio"]) >= 60)
    video.stop()
    audio.stop()
    sent = video.frames_sent
    # NOTE: aiortc's jitter buffer emits a frame when the next one starts, so the last may stay in it
    await wait_until(lambda: len(decoded["video"]) >= sent - 1)

    assert video.loops >= 2
    assert sent - 1 <= len(decoded["video"]) <= sent
    steps = {(b - a) & TS_MASK for a, b in zip(decoded["video"], decoded["video"][1:], strict=False)}
    assert steps == {90000 // FPS}, "RTP timestamps advance one frame at a time, also across loops"
    assert video.bytes_sent > 0
    assert video.keyframes_sent >= 4
    assert 60 <= len(decoded["audio"]) <= audio.frames_sent


async def test_a_track_without_loop_ends_after_one_pass(tmp_path: Path) -> None:
    clip = encode_vp8(160, 96, FPS, 0.2, 100_000, 1.0, cache_dir=tmp_path)
    track = EncodedVideoTrack(clip, loop=False)
    packets = [await track.recv() for _ in clip.frames]
    with pytest.raises(MediaStreamError):
        await track.recv()
    assert [p.pts for p in packets] == [f.pts for f in clip.frames]
    assert track.frames_sent == len(clip.frames)
    assert track.readyState == "ended"


async def test_a_looping_track_keeps_pts_increasing_past_the_end_of_the_clip(tmp_path: Path) -> None:
    clip = encode_opus(0.1, 32_000, cache_dir=tmp_path)
    track = EncodedAudioTrack(clip)
    pts = [(await track.recv()).pts for _ in range(3 * len(clip.frames))]
    track.stop()
    assert pts == [i * 960 for i in range(3 * len(clip.frames))]
    assert track.loops == 2


def test_a_clip_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot feed"):
        EncodedAudioTrack(encode_vp8(160, 96, FPS, 0.2, 100_000, 1.0, cache_dir=tmp_path))


def mux(path: Path, clips: list[EncodedClip], fmt: str) -> None:
    """Writes clips into a container without encoding (what a recorder would have produced)."""
    with av.open(str(path), "w", format=fmt) as out:
        streams: list[Any] = []
        for clip in clips:
            if clip.kind == "video":
                stream: Any = out.add_stream("libvpx" if clip.codec == "vp8" else "libx264", rate=10)
                stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, "yuv420p"
            else:
                stream = out.add_stream("libopus", rate=48000)
                stream.layout = "stereo"
            streams.append(stream)
        timed = sorted(
            ((f.pts * clip.time_base, i, f) for i, clip in enumerate(clips) for f in clip.frames),
            key=lambda item: (item[0], item[1]),
        )
        for _, i, frame in timed:
            packet = av.Packet(frame.data)
            packet.pts = packet.dts = frame.pts
            packet.time_base = clips[i].time_base
            packet.is_keyframe = frame.keyframe
            packet.stream = streams[i]
            out.mux(packet)


def assert_same_frames(got: EncodedClip, want: EncodedClip) -> None:
    assert got.codec == want.codec
    assert got.time_base == want.time_base
    assert [f.pts for f in got.frames] == [f.pts for f in want.frames]
    assert [f.keyframe for f in got.frames] == [f.keyframe for f in want.frames]
    assert got.duration_pts == want.duration_pts


def test_from_file_demuxes_webm_packets_without_decoding(tmp_path: Path) -> None:
    video = encode_vp8(160, 96, 10, 1.0, 100_000, 0.5, cache_dir=tmp_path)
    audio = encode_opus(1.0, 32_000, cache_dir=tmp_path)
    mux(tmp_path / "a.webm", [video, audio], "webm")
    got_video, got_audio = from_file(tmp_path / "a.webm")
    assert_same_frames(got_video, video)
    assert [f.data for f in got_video.frames] == [f.data for f in video.frames]
    assert (got_video.width, got_video.height) == (160, 96)
    assert_same_frames(got_audio, audio)
    assert got_audio.sample_rate == 48000


@pytest.mark.skipif(not has_h264_encoder(), reason="this PyAV build has no libx264")
def test_from_file_turns_mp4_h264_into_annex_b(tmp_path: Path) -> None:
    video = encode_h264(160, 96, 10, 1.0, 100_000, 0.5, cache_dir=tmp_path)
    mux(tmp_path / "a.mp4", [video], "mp4")
    (got,) = from_file(tmp_path / "a.mp4")
    assert_same_frames(got, video)
    assert all(f.data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")) for f in got.frames)
    decoder: Any = av.CodecContext.create("h264", "r")
    assert sum(len(decoder.decode(av.Packet(f.data))) for f in got.frames) >= len(got.frames) - 2


def test_from_file_refuses_a_file_without_supported_streams(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    with av.open(str(path), "w") as out:
        stream: Any = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame(format="s16", layout="mono", samples=80)
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
    with pytest.raises(ValueError, match="no VP8"):
        from_file(path)
