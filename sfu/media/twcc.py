"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

Split from `rtcp.py` (which re-exports it) to keep modules small; parse and build share no aiortc code.
Parsing here may raise on malformed input: `rtcp.parse_compound` catches it.
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
