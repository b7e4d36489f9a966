"""One forwarder per (feed, subscriber): start on a key frame, rewrite the header, send, answer NACKs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from sfu.media.counters import DropReason, new_drops
from sfu.media.munger import Munger
from sfu.media.rtp import HEADER, PT_SEQ_TS_SSRC, SEQ, SEQ_MASK, TS_MASK, payload_bounds

if TYPE_CHECKING:
    from sfu.media.receiver import Receiver

_PACK = PT_SEQ_TS_SSRC.pack_into
_PAUSED = DropReason.PAUSED
_WAITING = DropReason.WAITING_FOR_KEY_FRAME
_BEFORE_START = DropReason.BEFORE_START
_NOT_CONNECTED = DropReason.NOT_CONNECTED


class RtpSink(Protocol):
    """Where a forwarder's packets go: a subscriber transport's SRTP + socket (see bridge.SrtpSink)."""

    @property
    def connected(self) -> bool: ...

    def send_rtp(self, packet: bytearray) -> bool: ...


class Forwarder(Munger):
    """Sends one feed to one subscriber; seq/ts/SSRC continuity comes from `Munger`.

    `forward` is the per-packet function: flat, early returns, one copy (`bytearray(data)`) and one
    `pack_into` of byte 1 (marker kept, payload type set), seq, timestamp and SSRC.
    """

    __slots__ = (
        "drops",
        "kind",
        "mid",
        "nacks_in",
        "octets",
        "packets",
        "paused",
        "payload_type",
        "plis_in",
        "receiver",
        "retransmissions",
        "rtx_payload_type",
        "rtx_seq",
        "rtx_ssrc",
        "send",
        "sink",
        "video",
    )

    def __init__(
        self,
        receiver: Receiver,
        sink: RtpSink,
        *,
        mid: str,
        ssrc: int,
        payload_type: int,
        initial_seq: int,
        initial_ts: int,
    ) -> None:
        super().__init__(ssrc, receiver.clock_rate, initial_seq, initial_ts)
        self.receiver = receiver
        self.sink = sink
        self.send = sink.send_rtp
        self.mid = mid
        self.kind = receiver.kind
        self.video = receiver.kind == "video"
        self.payload_type = payload_type
        self.rtx_payload_type = -1  # >= 0 once the subscriber's answer accepted RTX (RFC 4588)
        self.rtx_ssrc = 0
        self.rtx_seq = initial_seq ^ 0x5A5A
        self.paused = False
        self.drops = new_drops()
        self.packets = 0
        self.octets = 0
        self.retransmissions = 0
        self.nacks_in = 0
        self.plis_in = 0

    def forward(self, data: bytes, seq: int, ts: int, key_frame: bool, now_ns: int) -> None:
        """Called by the receiver for every packet of the feed, in arrival order."""
        if self.paused:
            self.drops[_PAUSED] += 1
            return
        if not self.started:
            if not self.sink.connected:  # starting now would waste the key frame
                self.drops[_NOT_CONNECTED] += 1
                return
            if self.video and not key_frame:  # a decoder cannot start mid-GOP
                self.drops[_WAITING] += 1
                self.receiver.request_key_frame(now_ns)
                return
            self.resync(seq, ts, now_ns)
        elif (seq - self.start_seq) & SEQ_MASK >= 0x8000:  # older than this epoch's first packet
            self.drops[_BEFORE_START] += 1
            return
        out_seq = (seq + self.seq_off) & SEQ_MASK
        out_ts = (ts + self.ts_off) & TS_MASK
        buf = bytearray(data)
        _PACK(buf, 1, (data[1] & 0x80) | self.payload_type, out_seq, out_ts, self.ssrc)
        if (out_seq - self.last_seq_out) & SEQ_MASK < 0x8000:
            self.last_seq_out = out_seq
            self.last_ts_out = out_ts
            self.last_out_ns = now_ns
        if self.send(buf):
            self.packets += 1
            self.octets += len(buf)
        else:
            self.drops[_NOT_CONNECTED] += 1

    def retransmit(self, out_seqs: Sequence[int]) -> int:
        """Resends what the ring still holds for a subscriber's NACK (RFC 4585 6.2.1); returns the count.

        RFC 4588 RTX when the subscriber accepted it, else a plain retransmission with its own seq.
        """
        self.nacks_in += 1
        sent = 0
        ring = self.receiver.ring
        for out_seq in out_seqs:
            seq = self.feed_seq(out_seq)
            data = ring.get(seq) if seq >= 0 else None
            if data is None:
                self.drops[DropReason.NACK_MISS] += 1
                continue
            b0, b1, _seq, ts, _ssrc = HEADER.unpack_from(data)
            out_ts = (ts + self.ts_off) & TS_MASK
            if self.rtx_payload_type >= 0:
                # RFC 4588 section 4: the original seq (ours) leads the payload; padding is dropped
                start, end, _profile, _ext_end = payload_bounds(data, b0)
                buf = bytearray(data[:start])
                buf += SEQ.pack(out_seq)
                buf += data[start:end]
                buf[0] = b0 & 0xDF
                _PACK(buf, 1, (b1 & 0x80) | self.rtx_payload_type, self.rtx_seq, out_ts, self.rtx_ssrc)
                self.rtx_seq = (self.rtx_seq + 1) & SEQ_MASK
            else:
                buf = bytearray(data)
                _PACK(buf, 1, (b1 & 0x80) | self.payload_type, out_seq, out_ts, self.ssrc)
            if self.send(buf):
                sent += 1
        self.retransmissions += sent
        return sent

    def on_key_frame_request(self, now_ns: int) -> None:
        """A subscriber's PLI or FIR (RFC 4585 6.3.1, RFC 5104 4.3.1): the receiver coalesces them."""
        self.plis_in += 1
        self.receiver.request_key_frame(now_ns)

    def set_paused(self, paused: bool) -> None:
        """Pause (stop sending, keep state) or resume on the next key frame, without seq/ts jumps."""
        if paused == self.paused:
            return
        self.paused = paused
        self.stop()

    def stats(self) -> dict[str, int]:
        return {
            "packets": self.packets,
            "octets": self.octets,
            "retransmissions": self.retransmissions,
            "nacks_in": self.nacks_in,
            "plis_in": self.plis_in,
        }
