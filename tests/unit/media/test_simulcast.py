"""Simulcast through Receiver -> Forwarder: continuity across layer switches (incl. the 65535 wrap),
fallback, dynacast wants, VP8 key frame sizes, and the SDP answer."""

from __future__ import annotations

import itertools
import struct

import pytest

from sfu.media.counters import DropReason
from sfu.media.forwarder import Forwarder
from sfu.media.receiver import Receiver
from sfu.media.rtp import vp8_key_frame_size
from sfu.media.sdp import munge_publisher_answer, parse

MS = 1_000_000
DELTA = bytes([0x10, 0x01, 0x00, 0x00])
SSRCS = (1000, 2000, 3000)
SIZES = ((320, 180), (640, 360), (1280, 720))


def key(width: int, height: int) -> bytes:
    """RFC 7741 descriptor (S=1) + RFC 6386 9.1 key frame header with the given size."""
    return bytes([0x10, 0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A]) + struct.pack("<HH", width, height)


class FakeListener:
    def on_receiver_feedback(self, receiver: Receiver, urgent: bool) -> None:
        pass


class FakeSink:
    def __init__(self) -> None:
        self.connected = True
        self.sent: list[bytes] = []

    def send_rtp(self, packet: bytearray) -> bool:
        self.sent.append(bytes(packet))
        return True


def rtp(ssrc: int, seq: int, ts: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def simulcast_feed() -> Receiver:
    listener = FakeListener()
    layers = [
        Receiver(listener, mid="0", kind="video", codec="video/VP8", clock_rate=90000, payload_type=96,
                 ssrc=ssrc, rid=rid, layer=i)
        for i, (ssrc, rid) in enumerate(zip(SSRCS, "qhf", strict=True))
    ]
    head = layers[0]
    head.set_layers(tuple(layers))
    head.set_active_layers(0b111, 0)
    return head


class Publisher:
    """Three layers with their own seq spaces and timestamp offsets, one frame (2 packets) per 33 ms."""

    def __init__(self, head: Receiver, seq_starts: tuple[int, int, int]) -> None:
        self.head = head
        self.seqs = list(seq_starts)
        self.ts_offsets = (0, 123_456_789, 4_000_000_000)
        self.frame = 0

    def frame_out(self, key_layers: set[int]) -> None:
        now_ns = (self.frame * 33 + 1) * MS
        for layer, receiver in enumerate(self.head.layers):
            ts = self.ts_offsets[layer] + self.frame * 3000
            first = key(*SIZES[layer]) if layer in key_layers else DELTA
            for payload in (first, DELTA):
                receiver.on_rtp(rtp(SSRCS[layer], self.seqs[layer], ts, payload), now_ns)
                self.seqs[layer] = (self.seqs[layer] + 1) & 0xFFFF
        self.frame += 1


def out_headers(sink: FakeSink) -> list[tuple[int, int, int]]:
    return [struct.unpack_from("!HII", p, 2) for p in sink.sent]


@pytest.mark.parametrize(
    ("initial_seq", "seq_starts"),
    [
        (100, (10, 20_000, 40_000)),
        (65533, (65534, 100, 65530)),  # our seq wraps 65535 -> 0 across the switches
        (0, (65535, 65535, 65535)),  # every layer wraps on the way in
    ],
)
def test_seq_and_ts_stay_continuous_across_layer_switches(
    initial_seq: int, seq_starts: tuple[int, int, int]
) -> None:
    head = simulcast_feed()
    sink = FakeSink()
    f = Forwarder(head, sink, mid="1", ssrc=777, payload_type=96, initial_seq=initial_seq, initial_ts=5)
    head.add_forwarder(f)
    changes: list[tuple[str, str]] = []
    f.on_layer_changed = lambda _f, rid, reason: changes.append((rid, reason))
    pub = Publisher(head, seq_starts)
    pub.frame_out({0, 1, 2})  # starts on the highest layer
    pub.frame_out(set())
    f.set_max_layer(0, pub.frame * 33 * MS)
    pub.frame_out({1, 2})  # no key frame of q: stays on f
    pub.frame_out({0})  # switch down
    pub.frame_out(set())
    f.set_max_layer(2, pub.frame * 33 * MS)
    pub.frame_out({2})  # switch up
    pub.frame_out(set())
    headers = out_headers(sink)
    seqs = [s for s, _, _ in headers]
    assert seqs == [(initial_seq + i) & 0xFFFF for i in range(len(seqs))]
    assert {ssrc for _, _, ssrc in headers} == {777}
    steps = [(b[1] - a[1]) & 0xFFFFFFFF for a, b in itertools.pairwise(headers)]
    # a frame apart, or wall time since the last packet; 1 tick when the new layer's key frame is the
    # same picture as the frame just sent from the old layer (never backwards, never a leap)
    assert all(step in (0, 1, 2970, 3000) for step in steps), steps
    assert changes == [("f", "publisher"), ("q", "preference"), ("f", "preference")]
    assert f.layer_switches == 2
    assert len(sink.sent) == 2 * pub.frame + 2  # one layer per frame; the upgrade frame from both


def test_forwarder_falls_back_when_its_layer_stops_and_asks_for_a_key_frame() -> None:
    head = simulcast_feed()
    sink = FakeSink()
    f = Forwarder(head, sink, mid="1", ssrc=777, payload_type=96, initial_seq=1, initial_ts=0)
    head.add_forwarder(f)
    pub = Publisher(head, (1, 1, 1))
    pub.frame_out({0, 1, 2})
    assert f.current_rid == "f"
    head.set_active_layers(0b011, 100 * MS)  # "f" stopped arriving
    assert f.selector.target_layer == 1
    assert head.layers[1].take_feedback(100 * MS) != []  # PLI for "h" right away
    pub.frame_out({1})
    assert f.current_rid == "h"


def test_other_layers_are_not_dropped_as_errors_and_pause_stops_all() -> None:
    head = simulcast_feed()
    sink = FakeSink()
    f = Forwarder(head, sink, mid="1", ssrc=777, payload_type=96, initial_seq=1, initial_ts=0)
    head.add_forwarder(f)
    pub = Publisher(head, (1, 1, 1))
    pub.frame_out({0, 1, 2})
    assert sum(f.drops) == 0
    f.set_paused(True)
    pub.frame_out({0, 1, 2})
    assert f.drops[DropReason.PAUSED] == 6


def test_dynacast_wants_the_layers_subscribers_ask_for() -> None:
    head = simulcast_feed()
    wanted: list[list[str]] = []
    head.on_layers_wanted = lambda r: wanted.append(r.wanted_rids)
    a = Forwarder(head, FakeSink(), mid="1", ssrc=1, payload_type=96, initial_seq=1, initial_ts=0)
    b = Forwarder(head, FakeSink(), mid="1", ssrc=2, payload_type=96, initial_seq=1, initial_ts=0)
    head.add_forwarder(a)
    head.add_forwarder(b)  # no change: both want "f"
    b.set_max_layer(0, 0)
    a.set_paused(True)
    head.remove_forwarder(b)
    assert wanted == [["f"], ["q", "f"], ["q"], []]


def test_only_layer_aware_consumers_get_the_upper_layers() -> None:
    head = simulcast_feed()
    seen: list[int] = []

    class Recorder:
        def forward(self, data: bytes, seq: int, ts: int, key_frame: bool, now_ns: int) -> None:
            seen.append(struct.unpack_from("!I", data, 8)[0])

        def stop(self) -> None:
            pass

    head.add_forwarder(Recorder())  # type: ignore[arg-type]
    Publisher(head, (1, 1, 1)).frame_out({0, 1, 2})
    assert seen == [SSRCS[0], SSRCS[0]]


def test_receiver_learns_layer_sizes_from_vp8_key_frames() -> None:
    head = simulcast_feed()
    Publisher(head, (1, 1, 1)).frame_out({0, 1, 2})
    assert [(r.width, r.height) for r in head.layers] == list(SIZES)
    assert vp8_key_frame_size(DELTA, 0, len(DELTA)) == (0, 0)


CHROME_OFFER = """v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
m=video 9 UDP/TLS/RTP/SAVPF 96
c=IN IP4 0.0.0.0
a=mid:0
a=sendonly
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=rtpmap:96 VP8/90000
a=rid:q send max-width=320;max-height=180
a=rid:h send
a=rid:f send
a=simulcast:send q;h;f
"""

AIORTC_ANSWER = """v=0
o=- 3 4 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
m=video 9 UDP/TLS/RTP/SAVPF 96
c=IN IP4 0.0.0.0
a=mid:0
a=recvonly
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=rtpmap:96 VP8/90000
"""


def test_publisher_answer_accepts_simulcast_rfc8853() -> None:
    offer = CHROME_OFFER.replace("\n", "\r\n")
    answer, media = munge_publisher_answer(AIORTC_ANSWER.replace("\n", "\r\n"), offer)
    lines = answer.splitlines()
    assert [x for x in lines if x.startswith(("a=rid:", "a=simulcast:"))] == [
        "a=rid:q recv", "a=rid:h recv", "a=rid:f recv", "a=simulcast:recv q;h;f",
    ]
    assert "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in lines
    section = media["0"]
    assert section.rids == ["q", "h", "f"]
    assert section.rid_params["q"] == {"max-width": "320", "max-height": "180"}
    assert parse(CHROME_OFFER)[0].rids == ["q", "h", "f"]


def test_a_forwarder_answered_after_the_layers_started_still_gets_them() -> None:
    head = simulcast_feed()
    head.set_active_layers(0, 0)
    f = Forwarder(head, FakeSink(), mid="1", ssrc=5, payload_type=96, initial_seq=1, initial_ts=0)
    assert f.selector.target_layer == -1
    head.set_active_layers(0b111, 0)  # during the subscriber's SDP round trip: f is not attached yet
    head.add_forwarder(f)
    assert f.selector.target_layer == 2


def test_nacks_across_a_switch_are_answered_from_the_right_layer_once_per_gap() -> None:
    head = simulcast_feed()
    sink = FakeSink()
    f = Forwarder(head, sink, mid="1", ssrc=777, payload_type=96, initial_seq=100, initial_ts=5)
    head.add_forwarder(f)
    pub = Publisher(head, (10, 20_000, 40_000))
    pub.frame_out({0, 1, 2})  # starts on f
    pub.frame_out(set())
    f.set_max_layer(0, pub.frame * 33 * MS)
    pub.frame_out({0})  # switch down to q
    pub.frame_out(set())
    sent = {struct.unpack_from("!H", p, 2)[0]: p for p in sink.sent}
    before, after = 101, 105  # a packet of f (before the switch) and one of q (after it)
    assert struct.unpack_from("!I", sent[before], 8)[0] == 777
    sink.sent.clear()
    assert f.retransmit([before, after]) == 2
    # a plain retransmission (no RTX negotiated) is the packet as first sent: same seq, ts and payload
    assert sorted(sink.sent) == sorted([sent[before], sent[after]])
    # the subscriber repeats its NACK within an RTT: the first answer may still be on its way
    assert f.retransmit([before, after]) == 0
    assert f.retransmit([99]) == 0 and f.drops[DropReason.NACK_MISS] == 1  # never sent: a miss
