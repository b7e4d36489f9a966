"""client_sdk/repair.py: the loss repair policy, on a real aiortc video receiver fed packets by hand."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc.rtp import RtcpPsfbPacket, RtcpRtpfbPacket

from client_sdk.rawtap import video_receive_state
from client_sdk.repair import (
    MAX_NACKS,
    PLI_INTERVAL_S,
    Repairs,
    VideoRepair,
    is_h264_key_frame_start,
    is_vp8_key_frame_start,
)
from tests.unit.client_sdk.test_rawtap_contract import _video_receiver, _vp8


async def _repair_after(packets: list[Any]) -> tuple[Any, Any, VideoRepair]:
    pc, receiver, _ = await _video_receiver()
    for packet in packets:
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    state = video_receive_state(receiver)
    assert state is not None
    return pc, state, VideoRepair(state, 1234)


def test_vp8_and_h264_key_frame_starts_are_recognised() -> None:
    assert is_vp8_key_frame_start(b"\x10\x00")
    assert not is_vp8_key_frame_start(b"\x10\x01")  # a delta frame
    assert not is_vp8_key_frame_start(b"\x00\x00")  # not the start of a partition
    assert not is_vp8_key_frame_start(b"\x11\x00")  # partition 1
    # X with I (15-bit picture id), L and T: four descriptor bytes more before the frame header
    assert is_vp8_key_frame_start(b"\x90\xe0\x81\x02\x03\x04\x00")
    assert not is_vp8_key_frame_start(b"\x90\xe0\x81\x02\x03\x04\x01")
    assert not is_vp8_key_frame_start(b"")
    sps, idr, slice_ = b"\x67\x42", b"\x65\x88", b"\x41\x9a"
    assert is_h264_key_frame_start(sps) and is_h264_key_frame_start(idr)
    assert not is_h264_key_frame_start(slice_)
    stap_a = b"\x18" + len(sps).to_bytes(2, "big") + sps + len(idr).to_bytes(2, "big") + idr
    assert is_h264_key_frame_start(stap_a)
    assert not is_h264_key_frame_start(b"\x18" + len(slice_).to_bytes(2, "big") + slice_)
    assert is_h264_key_frame_start(b"\x7c\x85")  # FU-A, start of an IDR slice
    assert not is_h264_key_frame_start(b"\x7c\x05")  # FU-A, a later fragment


async def test_a_missing_packet_is_nacked_again_every_round_then_given_up_with_a_key_frame_request() -> None:
    pc, state, repair = await _repair_after([_vp8(10, 0, key_start=True), _vp8(12, 3000, start=True)])
    assert repair.tick(0.0) == ([], False)  # aiortc NACKed 11 when it went missing
    for round_ in range(MAX_NACKS):
        assert repair.tick(0.1 * (round_ + 1)) == ([11], False)
    renack, pli = repair.tick(1.1)
    assert renack == [] and pli  # given up: decoding waits for a key frame
    assert state.missing == set()
    assert repair.tick(1.2) == ([], False)  # one request per PLI_INTERVAL_S
    assert repair.tick(1.1 + PLI_INTERVAL_S) == ([], True)
    assert (repair.stats.renacked, repair.stats.given_up, repair.stats.key_frame_requests) == (
        MAX_NACKS,
        1,
        2,
    )
    await pc.close()


async def test_decoding_restarts_from_a_key_frame_that_arrived_behind_a_hole() -> None:
    packets = [
        *(_vp8(10, 0, key_start=True), _vp8(12, 3000, start=True), _vp8(13, 3000)),
        *(_vp8(15, 6000, key_start=True), _vp8(16, 6000), _vp8(17, 9000, start=True)),
    ]
    pc, state, repair = await _repair_after(packets)
    assert state.missing == {11, 14}
    assert repair.tick(0.0) == ([], False)
    assert state.buffered()[0] == 15  # the buffer starts at the key frame's first packet
    assert state.missing == set()  # 11 and 14 are older than the key frame: no longer asked for
    assert repair.stats.key_frame_restarts == 1
    await pc.close()


async def test_a_hole_the_buffer_already_skipped_is_no_longer_nacked() -> None:
    pc, state, repair = await _repair_after([_vp8(10, 0, key_start=True), _vp8(12, 3000, start=True)])
    state.skip_to(12)
    assert repair.tick(0.0) == ([], False)
    assert state.missing == set()
    await pc.close()


async def test_repairs_send_the_nacks_and_end_with_their_transport() -> None:
    pc, receiver, sent = await _video_receiver()
    for packet in (_vp8(10, 0, key_start=True), _vp8(12, 3000, start=True)):
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    record, third_nack = receiver._send_rtcp, asyncio.Event()

    async def send_rtcp(packet: Any) -> None:
        await record(packet)
        if sum(isinstance(p, RtcpRtpfbPacket) for p in sent) >= 3:
            third_nack.set()

    receiver._send_rtcp = send_rtcp
    repairs = Repairs()
    repairs.start(receiver, (1234,))
    repairs.start(receiver, (1234,))  # once per receiver
    await asyncio.wait_for(third_nack.wait(), 10)
    nacks = [p for p in sent if isinstance(p, RtcpRtpfbPacket)]
    assert all(p.lost == [11] and p.media_ssrc == 1234 for p in nacks)  # aiortc's own, then repeated
    assert not any(isinstance(p, RtcpPsfbPacket) for p in sent)
    assert repairs.stats().renacked == len(nacks) - 1
    await repairs.close()
    count = len(sent)
    await asyncio.sleep(0.15)
    assert len(sent) == count
    await pc.close()
