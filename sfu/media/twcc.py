"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

Split from `rtcp.py` (which re-exports it) to keep modules small; parse and build share no aiortc code.
Parsing here may raise on malformed input: `rtcp.parse_compound` catches it.

The send side lives here too: `stamp` writes the transport-wide seq (and abs-send-time) into a packet
just before SRTP protect (`bridge.SrtpSink.send_rtp`), `SendHistory` remembers send time and size per
seq and joins a feedback packet with them for the estimator (`gcc.py`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

HEADER: Final = struct.Struct("!BBH")
FB_SSRCS: Final = struct.Struct("!II")
TWCC_HEAD: Final = struct.Struct("!HHI")  # base seq, status count, reference time(24)|fb pkt count(8)
U16: Final = struct.Struct("!H")
I16: Final = struct.Struct("!h")
RTPFB: Final = 205
FMT_TWCC: Final = 15
SEQ_MASK: Final = 0xFFFF
TWCC_DELTA_US: Final = 250  # receive deltas are multiples of 250 us (draft section 3.1.5)
_V2: Final = 0x80


@dataclass(frozen=True, slots=True)
class TransportCc:
    """Transport-wide CC feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 section 3.1).

    `recv_deltas_us` has one entry per transport seq from `base_seq`: None if not received, else the
    receive time delta to the previous received packet (the first: to the reference time), a multiple
    of 250 us. `reference_time_64ms` is the 24-bit reference time in units of 64 ms.
    """

    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    reference_time_64ms: int
    fb_pkt_count: int
    recv_deltas_us: tuple[int | None, ...]

    def to_bytes(self) -> bytes:
        return build_twcc(self)


def _twcc_symbol(delta_us: int | None) -> int:
    if delta_us is None:
        return 0
    ticks = delta_us // TWCC_DELTA_US
    return 1 if 0 <= ticks <= 0xFF else 2


def _twcc_chunks(symbols: list[int]) -> bytes:
    """Greedy chunking: run-length for runs of 7+, else a 1-bit vector of 14 or a 2-bit vector of 7."""
    out = bytearray()
    i = 0
    n = len(symbols)
    while i < n:
        sym = symbols[i]
        run = 1
        while i + run < n and run < 0x1FFF and symbols[i + run] == sym:
            run += 1
        if run >= 7:
            out += U16.pack(sym << 13 | run)  # section 3.1.3: T=0, S(2), run length(13)
            i += run
            continue
        window = symbols[i : i + 14]
        if 2 not in window:  # section 3.1.4: T=1, S=0, 14 one-bit symbols
            word = 0x8000
            for k, s in enumerate(window):
                word |= s << (13 - k)
            i += len(window)
        else:  # T=1, S=1, 7 two-bit symbols
            word = 0xC000
            for k, s in enumerate(window[:7]):
                word |= s << (12 - 2 * k)
            i += min(7, len(window))
        out += U16.pack(word)
    return bytes(out)


def build_twcc(fb: TransportCc) -> bytes:
    """The feedback packet, padded to 32 bits with the P bit (what libwebrtc sends)."""
    symbols = [_twcc_symbol(d) for d in fb.recv_deltas_us]
    ref = (fb.reference_time_64ms & 0xFFFFFF) << 8 | (fb.fb_pkt_count & 0xFF)
    body = bytearray(TWCC_HEAD.pack(fb.base_seq & SEQ_MASK, len(symbols), ref))
    body += _twcc_chunks(symbols)
    for d in fb.recv_deltas_us:
        if d is None:
            continue
        ticks = d // TWCC_DELTA_US
        if 0 <= ticks <= 0xFF:
            body.append(ticks)
        else:
            body += I16.pack(max(-0x8000, min(0x7FFF, ticks)))
    pad = -len(body) % 4
    b0 = _V2 | FMT_TWCC
    if pad:  # RFC 3550 section 6.4.1: P bit, the last padding octet counts the padding
        body += bytes(pad - 1) + bytes((pad,))
        b0 |= 0x20
    return HEADER.pack(b0, RTPFB, 2 + len(body) // 4) + FB_SSRCS.pack(fb.sender_ssrc, fb.media_ssrc) + body


def parse_twcc(data: bytes, start: int, end: int) -> TransportCc | None:
    sender_ssrc, media_ssrc = FB_SSRCS.unpack_from(data, start + 4)
    base_seq, count, ref = TWCC_HEAD.unpack_from(data, start + 12)
    i = start + 20
    symbols: list[int] = []
    while len(symbols) < count:
        if i + 2 > end:
            return None
        word = U16.unpack_from(data, i)[0]
        i += 2
        if not word & 0x8000:
            symbols.extend([word >> 13 & 3] * min(word & 0x1FFF, count - len(symbols)))
        elif not word & 0x4000:
            symbols.extend((word >> (13 - k)) & 1 for k in range(14))
        else:
            symbols.extend((word >> (12 - 2 * k)) & 3 for k in range(7))
    del symbols[count:]
    deltas: list[int | None] = []
    for s in symbols:
        if s == 0:
            deltas.append(None)
        elif s == 1:
            if i + 1 > end:
                return None
            deltas.append(data[i] * TWCC_DELTA_US)
            i += 1
        elif s == 2:
            if i + 2 > end:
                return None
            deltas.append(I16.unpack_from(data, i)[0] * TWCC_DELTA_US)
            i += 2
        else:
            return None  # reserved symbol
    return TransportCc(sender_ssrc, media_ssrc, base_seq, ref >> 8, ref & 0xFF, tuple(deltas))


# --- the send side: transport-wide sequence numbers on every packet to a subscriber, and their history ---

URI_TRANSPORT_CC: Final = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
TRANSPORT_CC_ID: Final = 13  # the server's id towards subscribers (ROUTER_EXTENSION_IDS end at 11)
HISTORY_SIZE: Final = 8192  # transport seqs remembered per subscriber: ~8 s at 1000 packets/s
_HISTORY_MASK: Final = HISTORY_SIZE - 1
_EXT_HEAD: Final = struct.Struct("!HH")
_ONE_BYTE: Final = 0xBEDE
# abs-send-time (3 bytes: 6.18 fixed-point seconds) + transport-cc (2 bytes) + one padding byte
_BOTH: Final = struct.Struct("!IBHx")
_ABS_ONLY: Final = struct.Struct("!I")
_TWCC_ONLY: Final = struct.Struct("!BHx")


def abs_send_time(now_ns: int) -> int:
    """24-bit abs-send-time (webrtc.org abs-send-time: seconds in 6.18 fixed point, wrapping at 64 s)."""
    return (now_ns * 262144 // 1_000_000_000) & 0xFFFFFF


def _elements(abs_id: int, abs_value: int, twcc_id: int, twcc_seq: int) -> bytes:
    """The one-byte-form elements for what is asked (0 = leave out), padded to 32 bits."""
    if abs_id and twcc_id:
        return _BOTH.pack((abs_id << 28) | (2 << 24) | abs_value, (twcc_id << 4) | 1, twcc_seq)
    if twcc_id:
        return _TWCC_ONLY.pack((twcc_id << 4) | 1, twcc_seq)
    if abs_id:
        return _ABS_ONLY.pack((abs_id << 28) | (2 << 24) | abs_value)
    return b""


def _overwrite(
    buf: bytearray, i: int, end: int, abs_id: int, abs_value: int, twcc_id: int, twcc_seq: int
) -> int:
    """Overwrites the elements already in the block [i, end); returns a bit mask of those found (1 abs,
    2 transport-cc)."""
    found = 0
    while i < end:
        b = buf[i]
        if b == 0:
            i += 1
            continue
        ext_id = b >> 4
        if ext_id == 15:
            break
        length = (b & 0x0F) + 1
        if ext_id == abs_id and length == 3:
            buf[i + 1 : i + 4] = abs_value.to_bytes(3, "big")
            found |= 1
        elif ext_id == twcc_id and length == 2:
            buf[i + 1 : i + 3] = twcc_seq.to_bytes(2, "big")
            found |= 2
        i += 1 + length
    return found


def stamp(buf: bytearray, abs_id: int, abs_value: int, twcc_id: int, twcc_seq: int) -> None:
    """Writes abs-send-time and/or the transport-wide seq into `buf` (RFC 8285 one-byte form), in place.

    An element the packet already carries (the publisher's abs-send-time, mapped to the router id) is
    overwritten; missing ones are appended to the extension block (4 or 8 bytes, a memmove), which is
    created when the packet has none. A two-byte-form block (rare: only for elements > 16 bytes) is left
    alone. `abs_id`/`twcc_id` 0 = not negotiated.
    """
    b0 = buf[0]
    off = 12 + ((b0 & 0x0F) << 2)
    if not b0 & 0x10:
        elements = _elements(abs_id, abs_value, twcc_id, twcc_seq)
        buf[off:off] = _EXT_HEAD.pack(_ONE_BYTE, len(elements) >> 2) + elements
        buf[0] = b0 | 0x10
        return
    if off + 4 > len(buf):
        return
    profile, words = _EXT_HEAD.unpack_from(buf, off)
    end = off + 4 + (words << 2)
    if profile != _ONE_BYTE or end > len(buf):
        return
    found = _overwrite(buf, off + 4, end, abs_id, abs_value, twcc_id, twcc_seq)
    elements = _elements(0 if found & 1 else abs_id, abs_value, 0 if found & 2 else twcc_id, twcc_seq)
    if elements:
        buf[end:end] = elements
        _EXT_HEAD.pack_into(buf, off, _ONE_BYTE, words + (len(elements) >> 2))


class SendHistory:
    """What was sent to one subscriber, by transport-wide seq: send time (us) and size, in flat arrays
    (two stores per packet, nothing allocated). `packet_results` joins a feedback packet with it."""

    __slots__ = ("next_seq", "probe_bytes", "sent_bytes", "sent_us", "sizes")

    def __init__(self) -> None:
        self.next_seq = 0  # the next transport-wide seq (16 bits on the wire, unwrapped here)
        self.sent_us = [0] * HISTORY_SIZE
        self.sizes = [0] * HISTORY_SIZE
        self.sent_bytes = 0
        self.probe_bytes = 0

    def record(self, size: int, now_us: int) -> int:
        """The wire seq for a packet of `size` bytes sent now."""
        seq = self.next_seq
        self.next_seq = seq + 1
        slot = seq & _HISTORY_MASK
        self.sent_us[slot] = now_us
        self.sizes[slot] = size
        self.sent_bytes += size
        return seq & SEQ_MASK

    def unwrap(self, wire_seq: int) -> int:
        """The unwrapped seq nearest to the last one sent for a 16-bit `wire_seq`."""
        last = self.next_seq - 1
        delta = (wire_seq - last) & SEQ_MASK
        if delta >= 0x8000:
            delta -= 0x10000
        return last + delta

    def packet_results(self, fb: TransportCc) -> list[tuple[int, int, int]]:
        """(send us, arrival us or -1 if lost, size) per packet the feedback covers and the history still
        holds, in transport seq order. Arrival times are on the receiver's clock (only deltas matter)."""
        out: list[tuple[int, int, int]] = []
        base = self.unwrap(fb.base_seq)
        oldest = self.next_seq - HISTORY_SIZE
        arrival = fb.reference_time_64ms * 64_000
        for k, delta in enumerate(fb.recv_deltas_us):
            seq = base + k
            if delta is not None:
                arrival += delta
            if seq < oldest or seq >= self.next_seq or seq < 0:
                continue
            slot = seq & _HISTORY_MASK
            out.append((self.sent_us[slot], arrival if delta is not None else -1, self.sizes[slot]))
        return out
