"""client_sdk/examples/record_session.py's FeedWriter under loss: RTP from aiortc's own VP8 packetizer,
one packet lost; the file must skip to the next key frame and decode without a single error."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket

from client_sdk.examples.record_session import FeedWriter
from loadtest.media import encode_vp8
from tests.integration.recording.probe import decode_errors, probe

TS_BASE = 0xFFFFFFFF - 45000  # the RTP timestamp wraps half a second in


def test_the_example_writer_drops_a_broken_frame_and_resumes_at_the_next_key_frame(tmp_path: Path) -> None:
    clip = encode_vp8(320, 240, fps=30, seconds=3, bitrate_bps=400_000, keyframe_interval_s=1)
    encoder = Vp8Encoder()
    packets: list[RtpPacket] = []
    frame_starts: list[int] = []
    for frame in clip.frames:
        av_packet = av.Packet(frame.data)
        av_packet.pts, av_packet.time_base = frame.pts, Fraction(1, 90000)
        payloads, ts = encoder.pack(av_packet)
        frame_starts.append(len(packets))
        for i, payload in enumerate(payloads):
            packets.append(RtpPacket(payload_type=96, marker=int(i == len(payloads) - 1),
                                     sequence_number=(65500 + len(packets)) & 0xFFFF,
                                     timestamp=(ts + TS_BASE) & 0xFFFFFFFF, payload=payload))
    lost = frame_starts[40]  # frames 40..59 cannot be decoded: the next key frame is 60
    writer = FeedWriter(tmp_path / "f.webm", "video/VP8", 90000, 96)
    for index, packet in enumerate(packets):
        if index != lost:
            writer.mux(writer.write(packet))
    writer.close()
    assert writer.frames == len(clip.frames) - 20
    assert decode_errors(writer.path) == ""
    with av.open(str(writer.path)) as container:
        recorded = [bytes(p) for p in container.demux(video=0) if p.size]
    expected = [f.data for f in clip.frames[:40] + clip.frames[60:]]
    assert recorded == expected


async def test_the_example_file_keeps_rtp_timing_across_a_timestamp_wrap(tmp_path: Path) -> None:
    clip = encode_vp8(160, 96, fps=30, seconds=2, bitrate_bps=200_000, keyframe_interval_s=1)
    encoder = Vp8Encoder()
    writer = FeedWriter(tmp_path / "g.webm", "video/VP8", 90000, 96)
    seq = 0
    for frame in clip.frames:
        av_packet = av.Packet(frame.data)
        av_packet.pts, av_packet.time_base = frame.pts, Fraction(1, 90000)
        payloads, ts = encoder.pack(av_packet)
        for i, payload in enumerate(payloads):
            writer.mux(writer.write(RtpPacket(payload_type=96, marker=int(i == len(payloads) - 1),
                                              sequence_number=seq, timestamp=(ts + TS_BASE) & 0xFFFFFFFF,
                                              payload=payload)))
            seq += 1
    writer.close()
    found = await probe(writer.path)
    assert found.codec == "vp8" and len(found.packet_sizes) == len(clip.frames)
    assert abs(found.packet_times[-1] - found.packet_times[0] - (len(clip.frames) - 1) / 30) <= 0.002
