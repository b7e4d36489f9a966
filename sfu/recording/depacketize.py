"""RTP -> encoded frames for recording: reorder by sequence number, reassemble, drop what loss broke.

Runs on a recorder's worker thread, never on the event loop. One `Depacketizer` per feed:

- packets are held in a small reorder window keyed by extended sequence number (RFC 3550 appendix A.1),
  so NACK repairs that arrive a little late still land in their frame;
- a sequence gap that the window gives up on marks the frame being assembled as incomplete, and for video
  every frame after it is dropped until the next key frame (a decoder could not use them anyway);
- timestamps are unwrapped (RFC 3550 5.1: 32-bit, wrapping) so the muxer sees one increasing clock.

Payload formats: VP8 (RFC 7741), VP9 (RFC 9628, non-flexible and flexible mode, superframes joined),
H.264 (RFC 6184 single NAL, STAP-A, FU-A; emitted as Annex B) and Opus (RFC 7587, one packet per frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from sfu.media.rtp import HEADER, SEQ_MASK, TS_MASK, payload_bounds

ANNEX_B_START: Final = b"\x00\x00\x00\x01"
VIDEO_REORDER_WINDOW: Final = 128  # packets: ~0.5-1 s of video, longer than a NACK round trip
AUDIO_REORDER_WINDOW: Final = 16  # 320 ms of 20 ms Opus packets


class FrameDrop(IntEnum):
    """Why a packet or frame did not reach the file; indexes `Depacketizer.drops`."""

    MALFORMED = 0  # not RTP, or a payload the format cannot parse
    DUPLICATE = 1  # a sequence number already held
    LATE = 2  # older than what the reorder window already released
    LOST_PACKETS = 3  # sequence numbers never received (counted per packet)
    INCOMPLETE = 4  # a frame missing packets (counted per frame)
    WAITING_FOR_KEY_FRAME = 5  # a complete frame after a loss, before the next key frame
    CUT_AT_END = 6  # the last video frame, whose end had not come when the stream ended (stop, crash)


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded frame; `ts` is the unwrapped RTP timestamp of the feed."""

    ts: int
    data: bytes
    key_frame: bool


@dataclass(frozen=True, slots=True)
class Part:
    """What one packet's payload contributes to its frame."""

    data: bytes
    starts_frame: bool  # the payload format says this is a frame's first packet
    key_frame: bool


def vp8_part(payload: bytes) -> Part | None:
    """RFC 7741 section 4.2 payload descriptor; the key-frame bit is in the payload header (4.3)."""
    size = len(payload)
    if size < 1:
        return None
    b = payload[0]
    i = 1
    if b & 0x80:  # X: extended control bits
        if i >= size:
            return None
        x = payload[i]
        i += 1
        if x & 0x80:  # I: PictureID, M bit says 15 bits
            if i >= size:
                return None
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            i += 1
    if i >= size:
        return None
    starts = bool(b & 0x10) and b & 0x07 == 0  # S=1 and PID=0
    key = starts and not payload[i] & 0x01  # P=0 in the VP8 frame tag (RFC 6386 9.1)
    return Part(payload[i:], starts, key)


def vp9_part(payload: bytes) -> Part | None:
    """RFC 9628 section 4.2 payload descriptor (I P L F B E V Z) with its optional SS data (4.2.1)."""
    size = len(payload)
    if size < 1:
        return None
    b = payload[0]
    i = 1
    if b & 0x80:  # I: picture id
        if i >= size:
            return None
        i += 2 if payload[i] & 0x80 else 1
    sid = 0
    if b & 0x20:  # L: layer indices; TL0PICIDX only in non-flexible mode
        if i >= size:
            return None
        sid = (payload[i] >> 1) & 0x07
        i += 1 if b & 0x10 else 2
    if b & 0x10 and b & 0x40:  # F and P: up to 3 P_DIFF bytes, N bit chains them
        i = _skip_p_diffs(payload, i)
    if b & 0x02:  # V: scalability structure
        i = _skip_vp9_ss(payload, i)
        if i < 0:
            return None
    if i > size:
        return None
    starts = bool(b & 0x08)
    key = starts and not b & 0x40 and sid == 0
    return Part(payload[i:], starts, key)


def _skip_p_diffs(payload: bytes, i: int) -> int:
    """Offset after the P_DIFF bytes of flexible mode (RFC 9628 4.2), past the end if truncated."""
    while i < len(payload):
        more = payload[i] & 0x01
        i += 1
        if not more:
            return i
    return len(payload) + 1


def _skip_vp9_ss(payload: bytes, i: int) -> int:
    """Offset after the SS data (RFC 9628 4.2.1), or -1 if it runs past the payload."""
    if i >= len(payload):
        return -1
    ss = payload[i]
    i += 1
    if ss & 0x10:  # Y: width and height per spatial layer
        i += 4 * ((ss >> 5) + 1)
    if ss & 0x08:  # G: picture group description
        if i >= len(payload):
            return -1
        groups = payload[i]
        i += 1
        for _ in range(groups):
            if i >= len(payload):
                return -1
            i += 1 + ((payload[i] >> 2) & 0x03)
    return i if i <= len(payload) else -1


def h264_part(payload: bytes) -> Part | None:
    """RFC 6184 section 5.6 single NAL, 5.7.1 STAP-A, 5.8 FU-A, rewritten to Annex B start codes."""
    size = len(payload)
    if size < 1:
        return None
    nal_type = payload[0] & 0x1F
    if 1 <= nal_type <= 23:
        return Part(ANNEX_B_START + payload, False, nal_type == 5)
    if nal_type == 24:  # STAP-A: 16-bit size, NAL unit, repeated
        out = bytearray()
        key = False
        i = 1
        while i + 2 <= size:
            length = (payload[i] << 8) | payload[i + 1]
            i += 2
            if length == 0 or i + length > size:
                return None
            key = key or payload[i] & 0x1F == 5
            out += ANNEX_B_START
            out += payload[i : i + length]
            i += length
        return Part(bytes(out), False, key) if out else None
    if nal_type == 28:  # FU-A: indicator, header (S E R type), fragment
        if size < 2:
            return None
        header = payload[1]
        inner = header & 0x1F
        if header & 0x80:
            nal_header = bytes(((payload[0] & 0xE0) | inner,))
            return Part(ANNEX_B_START + nal_header + payload[2:], False, inner == 5)
        return Part(payload[2:], False, False)
    return None  # STAP-B, MTAP, FU-B: not used by WebRTC (packetization-mode 1)


def opus_part(payload: bytes) -> Part | None:
    """RFC 7587 section 4.2: one Opus packet per RTP packet; every packet decodes on its own."""
    return Part(payload, True, True) if payload else None


PARTS_BY_CODEC: Final = {"video/vp8": vp8_part, "video/vp9": vp9_part, "video/h264": h264_part,
                         "audio/opus": opus_part}


class Depacketizer:
    """Feed it RTP packets in arrival order (`push`), get complete frames in timestamp order."""

    __slots__ = (
        "_current_key",
        "_current_ok",
        "_current_parts",
        "_current_ts",
        "_held",
        "_highest",
        "_last_ts",
        "_next",
        "_part",
        "_video",
        "_waiting",
        "_window",
        "drops",
        "frames",
        "packets",
    )

    def __init__(self, codec: str, window: int | None = None) -> None:
        part = PARTS_BY_CODEC.get(codec.lower())
        if part is None:
            raise ValueError(f"cannot depacketize {codec}")
        self._part = part
        self._video = codec.lower().startswith("video/")
        self._window = window or (VIDEO_REORDER_WINDOW if self._video else AUDIO_REORDER_WINDOW)
        self._held: dict[int, tuple[bool, int, bytes]] = {}
        self._highest = -1  # extended seq
        self._next = -1  # extended seq of the next packet to release
        self._last_ts = -1  # unwrapped ts of the last released packet
        self._waiting = self._video  # a decoder needs a key frame first
        self._current_ts = -1
        self._current_parts: list[bytes] = []
        self._current_key = False
        self._current_ok = True
        self.drops = [0] * len(FrameDrop)
        self.frames = 0
        self.packets = 0

    def push(self, packet: bytes) -> list[Frame]:
        """Takes one RTP packet; returns the frames it completed (often none)."""
        if len(packet) < 12:
            self.drops[FrameDrop.MALFORMED] += 1
            return []
        b0, b1, seq, ts, _ssrc = HEADER.unpack_from(packet)
        start, end, _profile, _ext_end = payload_bounds(packet, b0)
        if b0 >> 6 != 2 or start > end:
            self.drops[FrameDrop.MALFORMED] += 1
            return []
        return self.push_payload(seq, ts, bool(b1 & 0x80), packet[start:end])

    def push_payload(self, seq: int, ts: int, marker: bool, payload: bytes) -> list[Frame]:
        """Same as `push` for a packet already parsed (e.g. an aiortc `RtpPacket` in an SDK recorder)."""
        self.packets += 1
        if self._highest < 0:
            self._highest = self._next = seq
        ext = self._highest + ((seq - self._highest + 0x8000) & SEQ_MASK) - 0x8000
        if ext < self._next:
            self.drops[FrameDrop.LATE] += 1
            return []
        if ext in self._held:
            self.drops[FrameDrop.DUPLICATE] += 1
            return []
        self._held[ext] = (marker, ts, payload)
        self._highest = max(self._highest, ext)
        out: list[Frame] = []
        self._release(out, force=False)
        return out

    def flush(self) -> list[Frame]:
        """End of the stream: releases what the window holds (gaps count as loss) and the last frame."""
        out: list[Frame] = []
        self._release(out, force=True)
        if self._current_parts and not self._video:
            self._emit(out)
        elif self._current_parts:
            # no marker: the stream ended inside this frame; not a loss, so counted apart from INCOMPLETE
            self._current_parts = []
            self._current_ok = True
            self._current_key = False
            self.drops[FrameDrop.CUT_AT_END] += 1
        return out

    def _release(self, out: list[Frame], *, force: bool) -> None:
        held = self._held
        while held:
            item = held.pop(self._next, None)
            if item is None:
                if not force and self._highest - self._next < self._window:
                    return
                oldest = min(held)
                self.drops[FrameDrop.LOST_PACKETS] += oldest - self._next
                self._next = oldest
                self._on_loss()
                continue
            self._next += 1
            self._on_packet(item[0], item[1], item[2], out)

    def _on_loss(self) -> None:
        if self._current_parts:
            self._current_ok = False
        if self._video:
            self._waiting = True

    def _on_packet(self, marker: bool, ts: int, payload: bytes, out: list[Frame]) -> None:
        last = self._last_ts
        unwrapped = ts if last < 0 else last + (ts - last + 2147483648 & TS_MASK) - 2147483648
        self._last_ts = unwrapped
        if self._current_parts and unwrapped != self._current_ts:
            if self._video:
                self._current_ok = False  # the previous frame's marker packet never came
            self._emit(out)
        part = self._part(payload)
        if part is None:
            self.drops[FrameDrop.MALFORMED] += 1
            self._current_ok = False
            if marker and self._current_parts:
                self._emit(out)
            return
        if not self._current_parts:
            self._current_ts = unwrapped
            self._current_ok = part.starts_frame or self._part is h264_part
            self._current_key = False
        self._current_parts.append(part.data)
        self._current_key = self._current_key or part.key_frame
        if marker or not self._video:
            self._emit(out)

    def _emit(self, out: list[Frame]) -> None:
        parts, key, ok = self._current_parts, self._current_key, self._current_ok
        self._current_parts = []
        self._current_ok = True
        self._current_key = False
        if not ok:
            self.drops[FrameDrop.INCOMPLETE] += 1
            if self._video:
                self._waiting = True
            return
        if self._waiting:
            if not key:
                self.drops[FrameDrop.WAITING_FOR_KEY_FRAME] += 1
                return
            self._waiting = False
        self.frames += 1
        out.append(Frame(self._current_ts, parts[0] if len(parts) == 1 else b"".join(parts), key))
