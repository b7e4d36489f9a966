from __future__ import annotations

import struct

from sfu.media.counters import DropReason
from sfu.media.forwarder import Forwarder
from sfu.media.receiver import Receiver
from sfu.media.rtcp import Pli, parse_compound

KEY = bytes([0x10, 0x00, 0x9D])
DELTA = bytes([0x10, 0x01, 0x00])
MS = 1_000_000


class FakeListener:
    def __init__(self) -> None:
        self.calls: list[tuple[Receiver, bool]] = []

    def on_receiver_feedback(self, receiver: Receiver, urgent: bool) -> None:
        self.calls.append((receiver, urgent))


class FakeSink:
    def __init__(self) -> None:
        self.connected = True
        self.sent: list[bytes] = []

    def send_rtp(self, packet: bytearray) -> bool:
        self.sent.append(bytes(packet))
        return True


def rtp(seq: int, ts: int, payload: bytes, *, pt: int = 96, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, ts, 1234) + payload


def video_receiver(listener: FakeListener) -> Receiver:
    return Receiver(
        listener, mid="0", kind="video", codec="video/VP8", clock_rate=90000, payload_type=96, ssrc=1234
    )


def forwarder(receiver: Receiver, sink: FakeSink) -> Forwarder:
    f = Forwarder(receiver, sink, mid="3", ssrc=777, payload_type=97, initial_seq=65535, initial_ts=10)
    receiver.add_forwarder(f)
    return f


def headers(sent: list[bytes]) -> list[tuple[int, int, int, int, int]]:
    return [struct.unpack_from("!BBHII", p) for p in sent]


def test_forwarder_waits_for_a_key_frame_then_rewrites_pt_seq_ts_ssrc() -> None:
    listener, sink = FakeListener(), FakeSink()
    receiver = video_receiver(listener)
    f = forwarder(receiver, sink)
    receiver.on_rtp(rtp(10, 1000, DELTA), 1 * MS)
    assert f.drops[DropReason.WAITING_FOR_KEY_FRAME] == 1
    assert parse_compound(b"".join(receiver.take_feedback(1 * MS))) == [Pli(1, 1234)]
    receiver.on_rtp(rtp(11, 4000, KEY, marker=True), 2 * MS)
    receiver.on_rtp(rtp(12, 7000, DELTA), 3 * MS)
    assert headers(sink.sent) == [(0x80, 0x80 | 97, 65535, 10, 777), (0x80, 97, 0, 3010, 777)]
    assert sink.sent[0][12:] == KEY


def test_receiver_nacks_its_own_gaps_and_a_late_packet_repairs_them() -> None:
    listener = FakeListener()
    receiver = video_receiver(listener)
    receiver.on_rtp(rtp(100, 0, KEY), MS)
    receiver.on_rtp(rtp(104, 0, DELTA), 2 * MS)
    assert receiver.take_nacks() == [101, 102, 103]
    receiver.on_rtp(rtp(102, 0, DELTA), 3 * MS)
    assert receiver.repaired == 1
    assert receiver.take_nacks() == [101, 103]
    receiver.on_rtp(rtp(104, 0, DELTA), 4 * MS)
    assert receiver.drops[DropReason.DUPLICATE] == 1


def test_subscriber_nack_is_answered_from_the_ring_with_its_own_seq() -> None:
    listener, sink = FakeListener(), FakeSink()
    receiver = video_receiver(listener)
    f = forwarder(receiver, sink)
    for i in range(5):
        receiver.on_rtp(rtp(200 + i, 9000, KEY if i == 0 else DELTA), MS)
    assert f.retransmit([1, 2, 40]) == 2
    assert [h[2] for h in headers(sink.sent[-2:])] == [1, 2]
    assert sink.sent[-1][12:] == sink.sent[2][12:]
    assert f.drops[DropReason.NACK_MISS] == 1


def test_key_frame_requests_are_coalesced_to_one_per_feed_per_500_ms() -> None:
    listener = FakeListener()
    receiver = video_receiver(listener)
    receiver.request_key_frame(1000 * MS)  # a new subscriber: at once
    assert len(receiver.take_feedback(1000 * MS)) == 1
    assert listener.calls[-1] == (receiver, True)
    receiver.request_key_frame(1100 * MS)  # another one 100 ms later: remembered, not sent
    receiver.request_key_frame(1200 * MS)
    assert receiver.take_feedback(1300 * MS) == []
    assert len(receiver.take_feedback(1500 * MS)) == 1  # the interval ended
    assert receiver.plis_out == 2
    receiver.request_key_frame(2100 * MS)
    assert len(receiver.take_feedback(2100 * MS)) == 1
    receiver.request_key_frame(2200 * MS)
    receiver.on_rtp(rtp(1, 0, KEY), 2300 * MS)  # a key frame serves the remembered request
    assert receiver.take_feedback(2700 * MS) == []


def test_a_key_frame_wanted_before_the_ssrc_is_known_is_sent_once_it_is() -> None:
    listener = FakeListener()
    receiver = Receiver(listener, mid="0", kind="video", codec="video/VP8", clock_rate=90000, payload_type=96)
    receiver.request_key_frame(MS)
    assert receiver.take_feedback(MS) == []
    receiver.set_ssrc(4321, 2 * MS)
    assert parse_compound(b"".join(receiver.take_feedback(2 * MS))) == [Pli(1, 4321)]


def test_muted_feed_is_not_forwarded_and_unmute_resyncs_on_a_key_frame() -> None:
    listener, sink = FakeListener(), FakeSink()
    receiver = video_receiver(listener)
    f = forwarder(receiver, sink)
    receiver.on_rtp(rtp(1, 0, KEY), MS)
    receiver.set_muted(True)
    receiver.on_rtp(rtp(2, 3000, DELTA), 2 * MS)
    receiver.set_muted(False)
    receiver.on_rtp(rtp(3, 6000, DELTA), 3 * MS)
    receiver.on_rtp(rtp(4, 9000, KEY), 1000 * MS)
    assert receiver.drops[DropReason.MUTED] == 1 and f.drops[DropReason.WAITING_FOR_KEY_FRAME] == 1
    (_, _, seq0, ts0, _), (_, _, seq1, ts1, _) = headers(sink.sent)
    assert seq1 == (seq0 + 1) & 0xFFFF
    assert ts1 - ts0 == 999 * 90  # wall time since the last packet sent, not the publisher's ts gap


def test_rtx_retransmission_carries_the_subscribers_seq_first_rfc4588() -> None:
    listener, sink = FakeListener(), FakeSink()
    receiver = video_receiver(listener)
    f = forwarder(receiver, sink)
    f.rtx_payload_type, f.rtx_ssrc = 98, 555
    receiver.on_rtp(rtp(300, 9000, KEY), MS)
    receiver.on_rtp(rtp(301, 9000, DELTA), MS)
    assert f.retransmit([0]) == 1
    _b0, b1, _rtx_seq, ts, ssrc = struct.unpack_from("!BBHII", sink.sent[-1])
    assert (b1 & 0x7F, ssrc, ts) == (98, 555, headers(sink.sent)[1][3])
    assert sink.sent[-1][12:14] == b"\x00\x00" and sink.sent[-1][14:] == DELTA
