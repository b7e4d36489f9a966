"""The raw publisher's packets: what aiortc would send for the same clip (RFC 7741 VP8 descriptors,
continuous sequence numbers, timestamps and picture ids across loops), plus the load tool's stamp."""

from __future__ import annotations

import itertools
import socket
from fractions import Fraction
from typing import Any

from aiortc.rtp import RtpPacket

from client_sdk.encoded import EncodedClip, EncodedFrame
from loadtest.raw_publisher import VP8_MAX_CHUNK, RawStream, packetize
from loadtest.taps import RawSendPath, read_send_stamp


def _vp8_clip() -> EncodedClip:
    frames = (
        EncodedFrame(b"\x10" + bytes(2 * VP8_MAX_CHUNK + 10), 0, True),  # three packets
        EncodedFrame(b"\x11" + bytes(100), 3000, False),
    )
    return EncodedClip("vp8", Fraction(1, 90000), frames, 6000)


def _stream(clip: EncodedClip, sent: list[bytes]) -> RawStream:
    path = RawSendPath(ssrc=0x1234, payload_type=97, mime_type="video/vp8", mid="1", mid_ext_id=3,
                       stamp_ext_id=8, protect=lambda data: data,
                       sendto=lambda data, addr: sent.append(data), remote_addr=None,
                       is_closing=lambda: False)  # fmt: skip
    return RawStream(path, packetize(clip), start_s=100.0, on_frame=lambda packets, octets: None,
                     on_sent=lambda data, now_ns: None)  # fmt: skip


def _parse(data: bytes) -> Any:
    return RtpPacket.parse(data)


def test_a_vp8_clip_is_split_at_the_chunk_size_with_a_start_bit_on_the_first_packet_only() -> None:
    sent: list[bytes] = []
    stream = _stream(_vp8_clip(), sent)
    stream.send_due(100.0)  # only the first frame is due
    packets = [_parse(d) for d in sent]
    assert len(packets) == 3
    assert [p.marker for p in packets] == [0, 0, 1]
    assert [p.payload[0] for p in packets] == [0x90, 0x80, 0x80]  # X, S on the first; PID 0
    assert {p.payload[1] for p in packets} == {0x80}  # I: a picture id follows
    assert len({p.payload[2:4] for p in packets}) == 1 and packets[0].payload[2] & 0x80  # 15-bit id
    assert b"".join(p.payload[4:] for p in packets) == _vp8_clip().frames[0].data
    first = packets[0].sequence_number
    assert [p.sequence_number for p in packets] == [(first + i) & 0xFFFF for i in range(3)]
    assert {p.ssrc for p in packets} == {0x1234} and {p.payload_type for p in packets} == {97}
    for data in sent:
        assert read_send_stamp(data, data[0]) > 0
    assert all(data[12:14] == b"\xbe\xde" for data in sent)


def test_sequence_numbers_timestamps_and_picture_ids_keep_increasing_across_loops() -> None:
    sent: list[bytes] = []
    stream = _stream(_vp8_clip(), sent)
    stream.send_due(100.0 + 3 * 6000 / 90000)  # three passes of the clip, and the next one's first frame
    packets = [_parse(d) for d in sent]
    firsts = [p for p in packets if p.payload[0] == 0x90]
    assert len(firsts) == 7
    stamps = [p.timestamp for p in firsts]
    assert [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)] == [3000] * 6
    ids = [int.from_bytes(p.payload[2:4], "big") & 0x7FFF for p in firsts]
    assert [(b - a) & 0x7FFF for a, b in itertools.pairwise(ids)] == [1] * 6
    seqs = [p.sequence_number for p in packets]
    assert [(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)] == [1] * (len(seqs) - 1)


def test_a_stalled_loop_resumes_from_now_instead_of_bursting_the_backlog() -> None:
    sent: list[bytes] = []
    stream = _stream(_vp8_clip(), sent)
    stream.send_due(100.0 + 60.0)  # a minute late: 1,800 frames were due
    assert len(sent) <= 4  # the two frames of the pass it resumed in, not a minute of them


def test_opus_frames_go_out_whole_one_per_packet() -> None:
    frames = tuple(EncodedFrame(bytes([i]) * 80, i * 960, True) for i in range(5))
    clip = EncodedClip("opus", Fraction(1, 48000), frames, 4800)
    sent: list[bytes] = []
    _stream(clip, sent).send_due(100.0 + 4 * 0.02)
    packets = [_parse(d) for d in sent]
    assert [p.payload for p in packets] == [f.data for f in frames]
    assert all(p.marker == 1 for p in packets)


async def test_the_pacer_drops_a_stream_whose_transport_closed_and_reports_it() -> None:
    import asyncio

    from loadtest.raw_publisher import RawPacer

    sent: list[bytes] = []
    three = asyncio.Event()
    closed = False

    def sendto(data: bytes, addr: object) -> None:
        sent.append(data)
        if len(sent) >= 3:
            three.set()

    path = RawSendPath(ssrc=1, payload_type=111, mime_type="audio/opus", mid="0", mid_ext_id=0,
                       stamp_ext_id=0, protect=lambda data: data, sendto=sendto, remote_addr=None,
                       is_closing=lambda: closed)  # fmt: skip
    frames = tuple(EncodedFrame(b"x" * 50, i * 960, True) for i in range(50))
    errors: list[str] = []
    pacer = RawPacer(errors)
    pacer.add(path, packetize(EncodedClip("opus", Fraction(1, 48000), frames, 48000)), lambda d, n: None, 0.0)
    try:
        await asyncio.wait_for(three.wait(), 5)
        closed = True
        await asyncio.sleep(0.1)
        count = len(sent)
        await asyncio.sleep(0.1)
        assert len(sent) == count and pacer.streams == []
        assert errors and "closed" in errors[0]
    finally:
        await pacer.close()


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2.0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    return rx, tx


def test_a_frame_sent_in_one_segmented_sendmsg_arrives_as_the_same_datagrams_and_is_counted() -> None:
    rx, tx = _udp_pair()
    singles: list[bytes] = []
    counted: list[tuple[int, int]] = []
    path = RawSendPath(ssrc=0x1234, payload_type=97, mime_type="video/vp8", mid="1", mid_ext_id=3,
                       stamp_ext_id=0, protect=lambda data: data + b"T" * 10,
                       sendto=lambda data, addr: singles.append(data), remote_addr=rx.getsockname(),
                       is_closing=lambda: False, fileno=tx.fileno())  # fmt: skip
    stream = RawStream(path, packetize(_vp8_clip()), 100.0, lambda n, o: counted.append((n, o)))
    try:
        stream.send_due(100.0)  # the first frame: three packets, one sendmsg
        assert stream.batch is not None and singles == []  # not the per-packet path
        got = [rx.recv(65536) for _ in range(3)]
        assert [len(d) for d in got[:2]] == [len(got[0])] * 2 and len(got[2]) < len(got[0])
        packets = [_parse(d[:-10]) for d in got]
        assert [p.marker for p in packets] == [0, 0, 1]
        assert b"".join(p.payload[4:] for p in packets) == _vp8_clip().frames[0].data
        assert all(d.endswith(b"T" * 10) for d in got)  # each one protected on its own
        assert counted == [(3, sum(len(d) - 10 for d in got))]
        assert all(d[0] == 0x90 and d[12:14] == b"\xbe\xde" for d in got)  # mid only: no stamp
        stream.send_due(100.0 + 3000 / 90000)  # one packet: a plain sendto
        assert len(singles) == 1 and counted[-1][0] == 1
    finally:
        stream.close()
        rx.close()
        tx.close()


def test_without_extensions_a_packet_has_no_extension_block() -> None:
    sent: list[bytes] = []
    path = RawSendPath(ssrc=1, payload_type=111, mime_type="audio/opus", mid="", mid_ext_id=0,
                       stamp_ext_id=0, protect=lambda data: data,
                       sendto=lambda data, addr: sent.append(data), remote_addr=None,
                       is_closing=lambda: False)  # fmt: skip
    frames = (EncodedFrame(b"opus" * 20, 0, True),)
    stream = RawStream(path, packetize(EncodedClip("opus", Fraction(1, 48000), frames, 960)), 100.0,
                       lambda n, o: None)  # fmt: skip
    stream.send_due(100.0)
    assert len(sent) == 1 and sent[0][0] == 0x80 and _parse(sent[0]).payload == b"opus" * 20


def test_a_stream_sends_sender_reports_with_its_counts_clock_and_cname() -> None:
    from aiortc.rtp import RtcpPacket, RtcpSdesPacket, RtcpSrPacket

    sent: list[bytes] = []
    reports: list[bytes] = []
    path = RawSendPath(ssrc=0x1234, payload_type=97, mime_type="video/vp8", mid="1", mid_ext_id=3,
                       stamp_ext_id=0, protect=lambda data: data,
                       sendto=lambda data, addr: (reports if 192 <= data[1] <= 223 else sent).append(data),
                       remote_addr=None, is_closing=lambda: False,
                       protect_rtcp=lambda data: data, cname="load-cname")  # fmt: skip
    stream = RawStream(path, packetize(_vp8_clip()), 100.0, lambda n, o: None)
    stream.send_due(100.0 + 3000 / 90000)  # both frames of the first pass: 4 packets, no report yet
    assert reports == [] and len(sent) == 4
    at = 100.0 + 1.6  # past the first report's time (0.5-1.5 s after the start)
    stream.send_due(at)
    assert len(reports) == 1
    sr, sdes = RtcpPacket.parse(reports[0])
    assert isinstance(sr, RtcpSrPacket) and isinstance(sdes, RtcpSdesPacket)
    assert sr.ssrc == 0x1234 and sdes.chunks[0].items == [(1, b"load-cname")]
    packets = [_parse(d) for d in sent[:4]]  # the report leaves before the frames of its tick
    assert sr.sender_info.packet_count == len(packets)
    assert sr.sender_info.octet_count == sum(len(p.payload) for p in packets)
    # RTP time of the report: the first packet's timestamp + the elapsed time at 90 kHz (the clip loops)
    elapsed = (sr.sender_info.rtp_timestamp - packets[0].timestamp) & 0xFFFFFFFF
    assert elapsed == round(1.6 * 90000)
    stream.send_due(at + 0.4)
    assert len(reports) == 1  # the next one 0.5-1.5 s later, not every tick


async def test_a_paused_pacer_sends_nothing_and_resumes_from_now_without_a_burst() -> None:
    import asyncio

    from loadtest.raw_publisher import RawPacer

    sent: list[bytes] = []
    path = RawSendPath(ssrc=1, payload_type=111, mime_type="audio/opus", mid="0", mid_ext_id=0,
                       stamp_ext_id=0, protect=lambda data: data,
                       sendto=lambda data, addr: sent.append(data), remote_addr=None,
                       is_closing=lambda: False)  # fmt: skip
    frames = tuple(EncodedFrame(b"x" * 50, i * 960, True) for i in range(50))  # 20 ms each
    pacer = RawPacer([])
    pacer.pause()
    pacer.add(path, packetize(EncodedClip("opus", Fraction(1, 48000), frames, 48000)), lambda n, o: None, 0.0)
    try:
        await asyncio.sleep(0.3)  # 15 frames' worth of time (less than the stall limit, MAX_LAG_S)
        assert sent == []
        pacer.resume()
        await asyncio.sleep(0.1)
        assert 0 < len(sent) <= 8  # ~5 frames from now on, not the 15 that were due while paused
        seqs = [_parse(d).sequence_number for d in sent]
        assert [(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)] == [1] * (len(seqs) - 1)
    finally:
        await pacer.close()
