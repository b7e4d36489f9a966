"""FeedRecorder on a real Receiver: RTP from aiortc's own packetizers in, a decodable codec-copy file out."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder

from client_sdk.encoded import EncodedClip
from loadtest.media import encode_h264, encode_vp8, has_h264_encoder
from sfu.media.receiver import Receiver
from sfu.recording.recorder import FeedRecorder
from tests.unit.recording.test_bitstream import encode_vp9

FFMPEG = shutil.which("ffmpeg")
TS_BASE = 0xFFFFFFFF - 45000  # the RTP timestamp wraps half a second in


class Transport:
    """The receiver's listener: what a publisher transport would send (nothing here)."""

    def on_receiver_feedback(self, receiver: Receiver, urgent: bool) -> None:
        pass


class Recording:
    """The recorder's listener, as a Recording is: notes what it is told."""

    def __init__(self) -> None:
        self.opened = 0
        self.errors: list[str] = []

    def on_recorder_file_opened(self, recorder: FeedRecorder) -> None:
        self.opened += 1

    def on_recorder_failed(self, recorder: FeedRecorder, error: str) -> None:
        self.errors.append(error)


def rtp_packets(clip: EncodedClip) -> list[bytes]:
    """The clip as RTP, packetized as aiortc sends it (VP8 descriptors, H.264 STAP-A/FU-A)."""
    encoder = H264Encoder() if clip.codec == "h264" else Vp8Encoder()
    out: list[bytes] = []
    seq = 65500  # the sequence number wraps too
    for frame in clip.frames:
        packet = av.Packet(frame.data)
        packet.pts, packet.time_base = frame.pts, Fraction(1, 90000)
        payloads, ts = encoder.pack(packet)
        for i, payload in enumerate(payloads):
            marker = 0x80 if i == len(payloads) - 1 else 0
            header = bytes((0x80, marker | 96)) + (seq & 0xFFFF).to_bytes(2, "big")
            header += ((ts + TS_BASE) & 0xFFFFFFFF).to_bytes(4, "big") + (1234).to_bytes(4, "big")
            out.append(header + payload)
            seq += 1
    return out


def vp9_rtp_packets(frames: list[tuple[bytes, bool]], mtu: int = 400) -> list[bytes]:
    """VP9 frames as RTP (RFC 9628 non-flexible descriptor: I with a 15-bit picture id, P, B, E)."""
    out: list[bytes] = []
    for index, (data, key) in enumerate(frames):
        chunks = [data[i : i + mtu] for i in range(0, len(data), mtu)]
        for j, chunk in enumerate(chunks):
            last = j == len(chunks) - 1
            flags = 0x80 | (0x08 if j == 0 else 0) | (0x04 if last else 0) | (0 if key else 0x40)
            descriptor = bytes((flags, 0x80 | (index >> 8) & 0x7F, index & 0xFF))
            marker = 0x80 if last else 0
            header = bytes((0x80, marker | 96)) + (len(out) & 0xFFFF).to_bytes(2, "big")
            header += (index * 3000).to_bytes(4, "big") + (1234).to_bytes(4, "big")
            out.append(header + descriptor + chunk)
    return out


async def record(
    clip: EncodedClip | None, path: Path, packets: list[bytes]
) -> tuple[FeedRecorder, Recording]:
    codec = "video/VP9" if clip is None else "video/H264" if clip.codec == "h264" else "video/VP8"
    receiver = Receiver(Transport(), mid="0", kind="video", codec=codec, clock_rate=90000, payload_type=96)
    listener = Recording()
    recorder = FeedRecorder(receiver, path, feed_id="f_1", uid="alice", listener=listener,
                            loop=asyncio.get_running_loop())
    recorder.start()
    for packet in packets:
        receiver.on_rtp(packet, time.monotonic_ns())
    await recorder.finish()
    await asyncio.sleep(0)  # the worker's calls to the listener run on the loop
    assert recorder not in receiver.forwarders
    return recorder, listener


def decode_errors(path: Path) -> str:
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    result = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, check=False)
    return result.stderr + ("" if result.returncode == 0 else f"exit {result.returncode}")


def demux(path: Path) -> tuple[str, list[float]]:
    with av.open(str(path)) as container:
        stream = container.streams[0]
        times = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size and p.pts is not None]
        return stream.codec_context.name, times


@pytest.mark.skipif(not has_h264_encoder(), reason="this PyAV build has no libx264 to make an H.264 clip")
async def test_h264_from_stap_a_and_fu_a_is_remuxed_to_a_decodable_matroska_file(tmp_path: Path) -> None:
    clip = encode_h264(320, 240, fps=30, seconds=3, bitrate_bps=400_000, keyframe_interval_s=1)
    path = tmp_path / "f_1.mkv"
    recorder, listener = await record(clip, path, rtp_packets(clip))
    assert listener.opened == 1 and listener.errors == []
    assert recorder.file_stats.frames == len(clip.frames)
    assert decode_errors(path) == ""
    codec, times = demux(path)
    assert codec == "h264" and len(times) == len(clip.frames)
    assert times[-1] == pytest.approx((len(clip.frames) - 1) / 30, abs=0.002)  # across the ts wrap


async def test_vp8_after_a_lost_packet_resumes_at_the_next_key_frame_and_decodes(tmp_path: Path) -> None:
    clip = encode_vp8(320, 240, fps=30, seconds=3, bitrate_bps=400_000, keyframe_interval_s=1)
    packets = rtp_packets(clip)
    frame_starts = [i for i, p in enumerate(packets) if p[12] & 0x10]  # VP8 descriptor S bit
    lost = frame_starts[40]  # the first packet of frame 40: frames 40..59 cannot be decoded
    path = tmp_path / "f_1.webm"
    recorder, listener = await record(clip, path, [p for i, p in enumerate(packets) if i != lost])
    assert listener.errors == []
    assert recorder.file_stats.frames == len(clip.frames) - 20
    assert recorder.file_stats.drops["lost_packets"] == 1
    assert recorder.file_stats.drops["waiting_for_key_frame"] + recorder.file_stats.drops["incomplete"] == 20
    assert decode_errors(path) == ""
    _codec, times = demux(path)
    assert times[40] == pytest.approx(60 / 30, abs=0.002)  # the gap is kept: timestamps come from RTP


async def test_an_unwritable_file_fails_the_recorder_and_tells_its_listener(tmp_path: Path) -> None:
    clip = encode_vp8(320, 240, fps=30, seconds=1, bitrate_bps=400_000, keyframe_interval_s=1)
    path = tmp_path / "missing-directory" / "f_1.webm"
    recorder, listener = await record(clip, path, rtp_packets(clip))
    assert recorder.failed and len(listener.errors) == 1
    assert recorder.file_stats.error == listener.errors[0] and "no such file" in listener.errors[0]


async def test_vp9_frames_are_remuxed_to_a_decodable_webm_file(tmp_path: Path) -> None:
    frames = encode_vp9(320, 240, 45)
    path = tmp_path / "f_1.webm"
    recorder, listener = await record(None, path, vp9_rtp_packets(frames))
    assert listener.errors == [] and recorder.file_stats.frames == len(frames)
    assert decode_errors(path) == ""
    codec, times = demux(path)
    assert codec == "vp9" and len(times) == len(frames)
