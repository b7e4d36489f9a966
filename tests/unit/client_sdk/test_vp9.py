"""client_sdk/vp9.py: RFC 9628 payload descriptors and frame assembly, then a real libvpx round trip."""

from __future__ import annotations

import struct
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc.rtp import RtpPacket

from client_sdk.vp9 import FrameAssembler, create_decoder, parse_descriptor


def test_a_flexible_mode_key_frame_descriptor_with_scalability_structure() -> None:
    # I (15-bit picture id), F, B, V; SS: N_S=0, Y (one size), G with one group (R=1, one P_DIFF)
    payload = bytes([0x80 | 0x10 | 0x08 | 0x02, 0x81, 0x23, 0x18]) + struct.pack("!HH", 320, 180)
    payload += b"\x01\x04\x01" + b"DATA"
    descriptor = parse_descriptor(payload)
    assert descriptor is not None
    assert descriptor.begins and not descriptor.ends and not descriptor.inter
    assert payload[descriptor.offset :] == b"DATA"


def test_a_flexible_mode_inter_frame_skips_its_chained_p_diffs() -> None:
    payload = bytes([0x80 | 0x40 | 0x10 | 0x04, 0x05, 0x03, 0x02]) + b"X"  # 7-bit id, P_DIFF N=1 then N=0
    descriptor = parse_descriptor(payload)
    assert descriptor is not None and descriptor.inter and descriptor.ends and not descriptor.begins
    assert payload[descriptor.offset :] == b"X"


def test_a_non_flexible_descriptor_has_layer_indices_and_tl0picidx() -> None:
    payload = bytes([0x80 | 0x20 | 0x08 | 0x04, 0x07, 0x02, 0x11]) + b"Y"  # SID 1 in the L byte
    descriptor = parse_descriptor(payload)
    assert descriptor is not None and descriptor.spatial_id == 1
    assert payload[descriptor.offset :] == b"Y"


def test_truncated_descriptors_are_refused() -> None:
    for payload in (b"", b"\x80", b"\x80\x81", bytes([0x02 | 0x08]), bytes([0x50, 0x01]), b"\x0a\x18\x00"):
        assert parse_descriptor(payload) is None, payload


def _packet(seq: int, ts: int, flags: int, data: bytes) -> RtpPacket:
    return RtpPacket(payload_type=98, sequence_number=seq, timestamp=ts, payload=bytes([flags]) + data)


B, E, P = 0x08, 0x04, 0x40


def test_frames_start_at_a_key_frame_and_a_loss_waits_for_the_next_one() -> None:
    assembler = FrameAssembler()
    assert assembler.push(_packet(1, 0, B | E | P, b"inter")) is None  # no key frame yet
    assert assembler.skipped == 1
    assert assembler.push(_packet(2, 3000, B, b"ke")) is None
    frame = assembler.push(_packet(3, 3000, E, b"y"))
    assert frame is not None and frame.key and frame.data == b"key" and frame.timestamp == 3000
    assembler.wants_key_frame = False
    inter = assembler.push(_packet(4, 6000, B | E | P, b"p1"))
    assert inter is not None and not inter.key
    assert assembler.push(_packet(5, 9000, B | P, b"half")) is None
    assert assembler.push(_packet(7, 9000, E | P, b"lost one")) is None  # seq 6 is missing
    assert assembler.lost == 1 and assembler.wants_key_frame
    assert assembler.push(_packet(8, 12000, B | E | P, b"p3")) is None  # undecodable without a key
    key = assembler.push(_packet(9, 15000, B | E, b"k2"))
    assert key is not None and key.key
    assert assembler.push(_packet(10, 18000, 0x80, b"")) is None  # truncated descriptor
    assert assembler.malformed == 1 and assembler.waiting_for_key


def test_libvpx_frames_split_into_rtp_packets_decode_after_assembly() -> None:
    encoder: Any = av.CodecContext.create("libvpx-vp9", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 160, 96, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, 30), Fraction(30, 1)
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    encoded = []
    for i in range(10):
        image = np.full((96, 160, 3), (i * 20) % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        encoded += [(bytes(p), bool(p.is_keyframe)) for p in encoder.encode(frame)]
    encoded += [(bytes(p), bool(p.is_keyframe)) for p in encoder.encode(None)]
    assembler, decoder, seq, frames = FrameAssembler(), create_decoder(), 0, []
    for n, (data, key) in enumerate(encoded):
        chunks = [data[j : j + 100] for j in range(0, len(data), 100)]
        for j, chunk in enumerate(chunks):
            flags = (B if j == 0 else 0) | (E if j == len(chunks) - 1 else 0) | (0 if key else P)
            out = assembler.push(_packet(seq, n * 3000, flags, chunk))
            seq += 1
            if out is not None:
                frames.append(out)
    assert [f.data for f in frames] == [d for d, _ in encoded]
    decoded = [f for frame in frames for f in decoder.decode(av.Packet(frame.data))]
    assert len(decoded) == len(encoded) and {(f.width, f.height) for f in decoded} == {(160, 96)}


async def test_sdk_publishers_never_offer_the_negotiation_only_vp9() -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack

    from client_sdk.peers import encodable_video_codecs
    from client_sdk.rawtap import install_negotiation_codecs

    install_negotiation_codecs()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        plain = pc.addTransceiver("video", direction="recvonly")
        assert plain.kind == "video"
        sending = pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        sending.setCodecPreferences(encodable_video_codecs())
        offer = await pc.createOffer()
        sections = offer.sdp.split("m=video")[1:]
        assert "VP9/90000" in sections[0]  # what the table holds, offered where nothing filters it
        assert "VP9/90000" not in sections[1] and "VP8/90000" in sections[1] and "rtx/90000" in sections[1]
    finally:
        await pc.close()
