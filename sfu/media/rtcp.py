"""RTCP parse and build: SR, RR, SDES, BYE, generic NACK, PLI, FIR, REMB and transport-wide CC feedback.

Pure functions on bytes with module-level `struct.Struct`s and no aiortc imports, so the packet path and
tests share one implementation. `parse_compound` never raises: RTCP comes from the network, a malformed
packet is skipped (bad inner content) or ends the parse (bad framing) and what came before is returned.
The `build_*` functions are the fast path for what the server sends often; the dataclasses' `to_bytes()`
produce the same bytes. Transport-wide CC feedback lives in `twcc.py` and is re-exported here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from sfu.media.twcc import TransportCc, build_twcc, parse_twcc

__all__ = [
    "Bye",
    "Fir",
    "Nack",
    "Pli",
    "ReceiverReport",
    "Remb",
    "ReportBlock",
    "RtcpPacket",
    "Sdes",
    "SdesChunk",
    "SenderReport",
    "TransportCc",
    "build_bye",
    "build_fir",
    "build_nack",
    "build_pli",
    "build_remb",
    "build_rr",
    "build_sdes",
    "build_sr",
    "build_twcc",
    "iter_rtcp",
    "ntp_now",
    "parse_compound",
    "parse_nack_seqs",
]

# RFC 3550 section 12.1 / RFC 4585 section 6.1 packet types
SR: Final = 200
RR: Final = 201
SDES: Final = 202
BYE: Final = 203
RTPFB: Final = 205
PSFB: Final = 206
# Feedback message types (FMT): RFC 4585 6.2.1 / 6.3.1, RFC 5104 4.3.1, draft-alvestrand-rmcat-remb,
# draft-holmer-rmcat-transport-wide-cc-extensions-01 section 3.1
FMT_NACK: Final = 1
FMT_TWCC: Final = 15
FMT_PLI: Final = 1
FMT_FIR: Final = 4
FMT_AFB: Final = 15

HEADER: Final = struct.Struct("!BBH")  # V P RC/FMT | PT | length in 32-bit words minus one
SSRC: Final = struct.Struct("!I")
SR_INFO: Final = struct.Struct("!IQIII")  # sender SSRC, NTP, RTP ts, packet count, octet count
# SSRC, fraction lost | cumulative lost, extended highest seq, jitter, LSR, DLSR
REPORT_BLOCK: Final = struct.Struct("!IIIIII")
FB_SSRCS: Final = struct.Struct("!II")  # sender SSRC, media SSRC (RFC 4585 section 6.1)
NACK_ITEM: Final = struct.Struct("!HH")  # PID, BLP
FIR_ITEM: Final = struct.Struct("!IB3x")  # SSRC, seq nr, reserved
REMB_HEAD: Final = struct.Struct("!4sBBH")  # "REMB", num SSRC, exp(6)|mantissa(18)

SEQ_MASK: Final = 0xFFFF
U32_MASK: Final = 0xFFFFFFFF
NTP_EPOCH_OFFSET: Final = 2208988800  # seconds from 1900-01-01 to 1970-01-01
REMB_MANTISSA_MAX: Final = 0x3FFFF
_V2: Final = 0x80


class ReportBlock(NamedTuple):
    """One reception report (RFC 3550 section 6.4.1); a plain 7-tuple is accepted wherever this is."""

    ssrc: int
    fraction_lost: int  # 0..255, fixed point /256
    packets_lost: int  # cumulative, signed 24-bit
    highest_seq: int  # extended highest sequence number received
    jitter: int
    lsr: int
    dlsr: int


class SdesChunk(NamedTuple):
    ssrc: int
    cname: str


@dataclass(frozen=True, slots=True)
class SenderReport:
    """RFC 3550 section 6.4.1; `ntp` is the 64-bit NTP timestamp."""

    ssrc: int
    ntp: int
    rtp_ts: int
    packets: int
    octets: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        return build_sr(self.ssrc, self.ntp, self.rtp_ts, self.packets, self.octets, self.reports)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RFC 3550 section 6.4.2."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        return build_rr(self.ssrc, self.reports)


@dataclass(frozen=True, slots=True)
class Sdes:
    """RFC 3550 section 6.5; only CNAME items are kept (an empty cname means the chunk had none)."""

    chunks: tuple[SdesChunk, ...]

    def to_bytes(self) -> bytes:
        return _build_sdes(self.chunks)


@dataclass(frozen=True, slots=True)
class Bye:
    """RFC 3550 section 6.6."""

    ssrcs: tuple[int, ...]
    reason: str = ""

    def to_bytes(self) -> bytes:
        return build_bye(self.ssrcs, self.reason)


@dataclass(frozen=True, slots=True)
class Nack:
    """Generic NACK (RFC 4585 section 6.2.1); `seqs` in the order the PID/BLP pairs list them."""

    sender_ssrc: int
    media_ssrc: int
    seqs: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return build_nack(self.sender_ssrc, self.media_ssrc, self.seqs)


@dataclass(frozen=True, slots=True)
class Pli:
    """Picture Loss Indication (RFC 4585 section 6.3.1)."""

    sender_ssrc: int
    media_ssrc: int

    def to_bytes(self) -> bytes:
        return build_pli(self.sender_ssrc, self.media_ssrc)


@dataclass(frozen=True, slots=True)
class Fir:
    """Full Intra Request (RFC 5104 section 4.3.1); `entries` are (media SSRC, command seq nr)."""

    sender_ssrc: int
    entries: tuple[tuple[int, int], ...]

    def to_bytes(self) -> bytes:
        fci = b"".join(FIR_ITEM.pack(ssrc, seq_nr & 0xFF) for ssrc, seq_nr in self.entries)
        return _fb(PSFB, FMT_FIR, self.sender_ssrc, 0, fci)


@dataclass(frozen=True, slots=True)
class Remb:
    """Receiver Estimated Max Bitrate (draft-alvestrand-rmcat-remb section 2.2)."""

    sender_ssrc: int
    bitrate_bps: int
    ssrcs: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return build_remb(self.sender_ssrc, self.bitrate_bps, self.ssrcs)


RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye | Nack | Pli | Fir | Remb | TransportCc


# --- builders (RFC 3550 section 6.4-6.6, RFC 4585 section 6.1) ---


def _fb(pt: int, fmt: int, sender_ssrc: int, media_ssrc: int, fci: bytes) -> bytes:
    return HEADER.pack(_V2 | fmt, pt, 2 + len(fci) // 4) + FB_SSRCS.pack(sender_ssrc, media_ssrc) + fci


def _pack_blocks(blocks: Iterable[tuple[int, int, int, int, int, int, int]]) -> bytes:
    return b"".join(
        REPORT_BLOCK.pack(ssrc, (fraction & 0xFF) << 24 | (lost & 0xFFFFFF), highest, jitter, lsr, dlsr)
        for ssrc, fraction, lost, highest, jitter, lsr, dlsr in blocks
    )


def build_sr(
    ssrc: int,
    ntp: int,
    rtp_ts: int,
    packets: int,
    octets: int,
    blocks: Sequence[tuple[int, int, int, int, int, int, int]] = (),
) -> bytes:
    """Sender report (RFC 3550 section 6.4.1); counters wrap at 32 bits."""
    body = _pack_blocks(blocks[:31])
    return (
        HEADER.pack(_V2 | min(len(blocks), 31), SR, 6 + len(body) // 4)
        + SR_INFO.pack(
            ssrc, ntp & 0xFFFFFFFFFFFFFFFF, rtp_ts & U32_MASK, packets & U32_MASK, octets & U32_MASK
        )
        + body
    )


def build_rr(sender_ssrc: int, blocks: Sequence[tuple[int, int, int, int, int, int, int]] = ()) -> bytes:
    """Receiver report (RFC 3550 section 6.4.2); blocks are `ReportBlock`s or the same 7-tuples."""
    body = _pack_blocks(blocks[:31])
    return HEADER.pack(_V2 | min(len(blocks), 31), RR, 1 + len(body) // 4) + SSRC.pack(sender_ssrc) + body


def _pad4(raw: bytes) -> bytes:
    return raw + bytes(-len(raw) % 4)


def _build_sdes(chunks: Sequence[tuple[int, str]]) -> bytes:
    body = b""
    for ssrc, cname in chunks[:31]:
        raw = cname.encode()[:255]
        item = bytes((1, len(raw))) + raw if raw else b""
        # NOTE: the item list ends with a null octet, then pads to 32 bits (RFC 3550 section 6.5)
        body += _pad4(SSRC.pack(ssrc) + item + b"\x00")
    return HEADER.pack(_V2 | min(len(chunks), 31), SDES, len(body) // 4) + body


def build_sdes(ssrc: int, cname: str) -> bytes:
    """SDES with one CNAME item (RFC 3550 section 6.5.1)."""
    return _build_sdes(((ssrc, cname),))


def build_bye(ssrcs: Sequence[int], reason: str = "") -> bytes:
    """Goodbye (RFC 3550 section 6.6) with an optional reason."""
    body = b"".join(SSRC.pack(s) for s in ssrcs[:31])
    if reason:
        raw = reason.encode()[:255]
        body = _pad4(body + bytes((len(raw),)) + raw)
    return HEADER.pack(_V2 | min(len(ssrcs), 31), BYE, len(body) // 4) + body


def build_nack(sender_ssrc: int, media_ssrc: int, seqs: Sequence[int]) -> bytes:
    """Generic NACK (RFC 4585 section 6.2.1): seqs packed into PID + 16-bit BLP pairs, wrap-aware."""
    if not seqs:
        return _fb(RTPFB, FMT_NACK, sender_ssrc, media_ssrc, b"")
    anchor = seqs[0] - 0x8000
    # NOTE: ordered by distance from the first seq minus half the space, so 65535 sorts before 0
    ordered = sorted({s & SEQ_MASK for s in seqs}, key=lambda s: (s - anchor) & SEQ_MASK)
    fci = bytearray()
    pid = ordered[0]
    blp = 0
    for s in ordered[1:]:
        d = (s - pid - 1) & SEQ_MASK
        if d < 16:
            blp |= 1 << d
        else:
            fci += NACK_ITEM.pack(pid, blp)
            pid = s
            blp = 0
    fci += NACK_ITEM.pack(pid, blp)
    return _fb(RTPFB, FMT_NACK, sender_ssrc, media_ssrc, bytes(fci))


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """Picture Loss Indication (RFC 4585 section 6.3.1)."""
    return HEADER.pack(_V2 | FMT_PLI, PSFB, 2) + FB_SSRCS.pack(sender_ssrc, media_ssrc)


def build_fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes:
    """Full Intra Request for one SSRC (RFC 5104 section 4.3.1.1); media SSRC in the header is 0."""
    return (
        HEADER.pack(_V2 | FMT_FIR, PSFB, 4)
        + FB_SSRCS.pack(sender_ssrc, 0)
        + FIR_ITEM.pack(media_ssrc, seq_nr & 0xFF)
    )


def remb_mantissa_exp(bitrate_bps: int) -> tuple[int, int]:
    """The 18-bit mantissa and 6-bit exponent for a bitrate, rounded down (draft-alvestrand-rmcat-remb)."""
    mantissa = max(bitrate_bps, 0)
    exp = 0
    while mantissa > REMB_MANTISSA_MAX:
        mantissa >>= 1
        exp += 1
    return mantissa, min(exp, 63)


def build_remb(sender_ssrc: int, bitrate_bps: int, ssrcs: Sequence[int]) -> bytes:
    """REMB (draft-alvestrand-rmcat-remb section 2.2) covering `ssrcs`; media SSRC in the header is 0."""
    mantissa, exp = remb_mantissa_exp(bitrate_bps)
    ssrcs = ssrcs[:255]
    fci = REMB_HEAD.pack(b"REMB", len(ssrcs), exp << 2 | mantissa >> 16, mantissa & 0xFFFF)
    fci += b"".join(SSRC.pack(s) for s in ssrcs)
    return _fb(PSFB, FMT_AFB, sender_ssrc, 0, fci)


def ntp_now(wall_s: float) -> int:
    """64-bit NTP timestamp (RFC 3550 section 4) for a `time.time()` value."""
    return int((wall_s + NTP_EPOCH_OFFSET) * 4294967296.0)


# --- parsing ---


def iter_rtcp(data: bytes) -> list[tuple[int, int, bytes]]:
    """(packet type, count/FMT, packet bytes) per packet of a compound datagram, stopping at bad framing."""
    out: list[tuple[int, int, bytes]] = []
    i = 0
    size = len(data)
    while i + 4 <= size:
        b0, pt, words = HEADER.unpack_from(data, i)
        end = i + 4 + (words << 2)
        if b0 >> 6 != 2 or end > size:
            break
        out.append((pt, b0 & 0x1F, data[i:end]))
        i = end
    return out


def parse_nack_seqs(data: bytes, start: int, end: int) -> list[int]:
    """Lost seqs listed by the PID/BLP pairs in data[start:end] (RFC 4585 section 6.2.1)."""
    lost: list[int] = []
    for i in range(start, end - 3, 4):
        pid, blp = NACK_ITEM.unpack_from(data, i)
        lost.append(pid)
        bit = 0
        while blp:
            if blp & 1:
                lost.append((pid + bit + 1) & SEQ_MASK)
            blp >>= 1
            bit += 1
    return lost


def _blocks(data: bytes, start: int, count: int) -> tuple[ReportBlock, ...]:
    out = []
    for k in range(count):
        ssrc, lost_word, highest, jitter, lsr, dlsr = REPORT_BLOCK.unpack_from(data, start + 24 * k)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        out.append(ReportBlock(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr))
    return tuple(out)


def _parse_sdes(data: bytes, start: int, end: int, count: int) -> Sdes:
    chunks = []
    i = start
    for _ in range(count):
        if i + 4 > end:
            raise ValueError("sdes chunk overruns the packet")
        ssrc = SSRC.unpack_from(data, i)[0]
        i += 4
        cname = ""
        while i < end and data[i] != 0:
            if i + 2 > end:
                raise ValueError("sdes item overruns the packet")
            kind, length = data[i], data[i + 1]
            if i + 2 + length > end:
                raise ValueError("sdes item overruns the packet")
            if kind == 1:
                cname = data[i + 2 : i + 2 + length].decode("utf-8", "replace")
            i += 2 + length
        i = (i + 4) & ~3  # skip the null octet(s) to the next 32-bit boundary
        chunks.append(SdesChunk(ssrc, cname))
    return Sdes(tuple(chunks))


def _parse_bye(data: bytes, start: int, end: int, count: int) -> Bye:
    if start + 4 * count > end:
        raise ValueError("bye ssrcs overrun the packet")
    ssrcs = tuple(SSRC.unpack_from(data, start + 4 * k)[0] for k in range(count))
    i = start + 4 * count
    reason = ""
    if i < end:
        length = data[i]
        if i + 1 + length > end:
            raise ValueError("bye reason overruns the packet")
        reason = data[i + 1 : i + 1 + length].decode("utf-8", "replace")
    return Bye(ssrcs, reason)


def _parse_psfb(data: bytes, start: int, end: int, fmt: int) -> RtcpPacket | None:
    sender_ssrc, media_ssrc = FB_SSRCS.unpack_from(data, start + 4)
    if fmt == FMT_PLI:
        return Pli(sender_ssrc, media_ssrc)
    if fmt == FMT_FIR:
        entries = tuple(FIR_ITEM.unpack_from(data, i) for i in range(start + 12, end - 7, 8))
        return Fir(sender_ssrc, entries)
    if fmt == FMT_AFB and end - start >= 20:
        ident, num, b1, low = REMB_HEAD.unpack_from(data, start + 12)
        if ident != b"REMB" or start + 20 + 4 * num > end:
            return None
        ssrcs = tuple(SSRC.unpack_from(data, start + 20 + 4 * k)[0] for k in range(num))
        return Remb(sender_ssrc, ((b1 & 3) << 16 | low) << (b1 >> 2), ssrcs)
    return None


def _parse_one(data: bytes, start: int, end: int, b0: int, pt: int) -> RtcpPacket | None:
    count = b0 & 0x1F
    if pt == SR:
        if start + 28 + 24 * count > end:
            return None
        ssrc, ntp, rtp_ts, packets, octets = SR_INFO.unpack_from(data, start + 4)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _blocks(data, start + 28, count))
    if pt == RR:
        if start + 8 + 24 * count > end:
            return None
        return ReceiverReport(SSRC.unpack_from(data, start + 4)[0], _blocks(data, start + 8, count))
    if pt == SDES:
        return _parse_sdes(data, start + 4, end, count)
    if pt == BYE:
        return _parse_bye(data, start + 4, end, count)
    if end - start < 12:
        return None
    if pt == RTPFB:
        if count == FMT_NACK:
            sender_ssrc, media_ssrc = FB_SSRCS.unpack_from(data, start + 4)
            return Nack(sender_ssrc, media_ssrc, tuple(parse_nack_seqs(data, start + 12, end)))
        if count == FMT_TWCC and end - start >= 20:
            return parse_twcc(data, start, end)
        return None
    if pt == PSFB:
        return _parse_psfb(data, start, end, count)
    return None


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Every packet of a compound RTCP datagram that parses; never raises on malformed input.

    A packet with bad framing (version != 2, length past the end) ends the walk; one whose content is
    malformed or whose type is not handled here is skipped.
    """
    out: list[RtcpPacket] = []
    i = 0
    size = len(data)
    while i + 4 <= size:
        b0, pt, words = HEADER.unpack_from(data, i)
        end = i + 4 + (words << 2)
        if b0 >> 6 != 2 or end > size:
            break
        body_end = end
        if b0 & 0x20:  # padding: the last octet counts the padding octets (RFC 3550 section 6.4.1)
            body_end -= data[end - 1]
        if body_end >= i + 4:
            try:
                packet = _parse_one(data, i, body_end, b0, pt)
            except (struct.error, IndexError, ValueError):
                packet = None
            if packet is not None:
                out.append(packet)
        i = end
    return out
