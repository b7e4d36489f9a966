"""RTP header layout, header-extension rewriting and key-frame detection, as flat functions on bytes.

Everything here is called per packet: module-level `struct.Struct`s, no objects, no exceptions for bad
input (callers check lengths first or get `False`/`None`).
"""

from __future__ import annotations

import struct
from typing import Final

# RFC 3550 section 5.1: V P X CC | M PT | sequence number | timestamp | SSRC
HEADER: Final = struct.Struct("!BBHII")
# byte 1 (M|PT), seq, ts, SSRC: what a forwarder rewrites, starting at offset 1
PT_SEQ_TS_SSRC: Final = struct.Struct("!BHII")
SEQ: Final = struct.Struct("!H")
SSRC: Final = struct.Struct("!I")
# RFC 3550 section 5.3.1: defined by profile | length in 32-bit words
EXTENSION_HEADER: Final = struct.Struct("!HH")

HEADER_SIZE: Final = 12
SEQ_MASK: Final = 0xFFFF
TS_MASK: Final = 0xFFFFFFFF

# RFC 8285 section 4.2 / 4.3
ONE_BYTE_PROFILE: Final = 0xBEDE
TWO_BYTE_PROFILE_MASK: Final = 0xFFF0
TWO_BYTE_PROFILE: Final = 0x1000

# The server's own header-extension ids (the "router capabilities"): every subscriber is offered these,
# and every publisher's ids are mapped onto them once per packet. Ids 1-3 match aiortc's defaults, so an
# aiortc publisher needs no rewriting of video packets. Ids stay <= 14 to fit the one-byte form.
URI_MID: Final = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RID: Final = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID: Final = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_AUDIO_LEVEL: Final = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME: Final = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
ROUTER_EXTENSION_IDS: Final[dict[str, int]] = {
    URI_MID: 1,
    URI_AUDIO_LEVEL: 2,
    URI_ABS_SEND_TIME: 3,
    "urn:ietf:params:rtp-hdrext:toffset": 4,
    "urn:3gpp:video-orientation": 5,
    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay": 6,
    "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type": 7,
    "http://www.webrtc.org/experiments/rtp-hdrext/video-timing": 8,
    "http://www.webrtc.org/experiments/rtp-hdrext/color-space": 9,
    URI_RID: 10,
    URI_REPAIRED_RID: 11,
}
# What subscribers are offered, per kind. MID/RID are per transport (routing), never forwarded.
SUBSCRIBER_EXTENSIONS: Final[dict[str, tuple[str, ...]]] = {
    "audio": (URI_AUDIO_LEVEL,),
    "video": (
        URI_ABS_SEND_TIME,
        "urn:ietf:params:rtp-hdrext:toffset",
        "urn:3gpp:video-orientation",
        "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
        "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type",
        "http://www.webrtc.org/experiments/rtp-hdrext/video-timing",
        "http://www.webrtc.org/experiments/rtp-hdrext/color-space",
    ),
}


def build_extension_id_map(publisher_ids: dict[str, int]) -> tuple[bytes, bool]:
    """(256-entry publisher id -> router id table, 0 = blank out; True if no packet needs rewriting)."""
    table = bytearray(256)
    identity = True
    for uri, pub_id in publisher_ids.items():
        router_id = ROUTER_EXTENSION_IDS.get(uri, 0)
        if 0 < pub_id < 256:
            table[pub_id] = router_id
            if router_id != pub_id:
                identity = False
    return bytes(table), identity


def payload_bounds(data: bytes | bytearray, b0: int) -> tuple[int, int, int, int]:
    """(payload start, payload end, extension profile, extension block end); start > end if malformed.

    RFC 3550 section 5.1: CSRCs, then the optional extension, then the payload, then padding.
    """
    size = len(data)
    off = HEADER_SIZE + ((b0 & 0x0F) << 2)
    profile = 0
    ext_end = off
    if b0 & 0x10:
        if off + 4 > size:
            return size + 1, size, 0, off
        profile, words = EXTENSION_HEADER.unpack_from(data, off)
        off += 4
        ext_end = off + (words << 2)
        off = ext_end
    end = size
    if b0 & 0x20 and size:
        end -= data[size - 1]
    return off, end, profile, ext_end


def rewrite_extension_ids(buf: bytearray, start: int, end: int, profile: int, id_map: bytes) -> None:
    """Maps element ids in place through `id_map`; unmapped elements become padding (RFC 8285 4.2/4.3).

    Zero bytes are padding in both forms, so blanking keeps the length and needs no re-layout.
    """
    i = start
    if profile == ONE_BYTE_PROFILE:
        while i < end:
            b = buf[i]
            if b == 0:
                i += 1
                continue
            ext_id = b >> 4
            if ext_id == 15:
                return
            length = (b & 0x0F) + 1
            new_id = id_map[ext_id]
            if new_id == 0 or new_id > 14:
                buf[i : i + 1 + length] = bytes(1 + length)
            elif new_id != ext_id:
                buf[i] = (new_id << 4) | (b & 0x0F)
            i += 1 + length
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while i + 1 < end:
            ext_id = buf[i]
            if ext_id == 0:
                i += 1
                continue
            length = buf[i + 1]
            new_id = id_map[ext_id]
            if new_id == 0:
                buf[i : i + 2 + length] = bytes(2 + length)
            else:
                buf[i] = new_id
            i += 2 + length


def find_extension(data: bytes | bytearray, start: int, end: int, profile: int, wanted: int) -> bytes | None:
    """The value of extension element `wanted`, or None (RFC 8285; used to latch SSRC -> MID)."""
    i = start
    one_byte = profile == ONE_BYTE_PROFILE
    if not one_byte and profile & TWO_BYTE_PROFILE_MASK != TWO_BYTE_PROFILE:
        return None
    while i < end:
        b = data[i]
        if b == 0:
            i += 1
            continue
        if one_byte:
            ext_id, length, head = b >> 4, (b & 0x0F) + 1, 1
            if ext_id == 15:
                return None
        else:
            if i + 1 >= end:
                return None
            ext_id, length, head = b, data[i + 1], 2
        if ext_id == wanted:
            return bytes(data[i + head : i + head + length])
        i += head + length
    return None


def is_vp8_key_frame(data: bytes | bytearray, off: int, end: int) -> bool:
    """First packet of a VP8 key frame: RFC 7741 section 4.2 descriptor, 4.3 P bit of the payload header."""
    if off >= end:
        return False
    b = data[off]
    if not b & 0x10 or b & 0x07:  # S=1 and PID=0: start of partition 0
        return False
    i = off + 1
    if b & 0x80:  # X: extended control bits
        if i >= end:
            return False
        x = data[i]
        i += 1
        if x & 0x80:  # I: PictureID, 7 or 15 bits
            if i >= end:
                return False
            i += 2 if data[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            i += 1
    return i < end and not data[i] & 0x01


def vp8_key_frame_size(data: bytes | bytearray, off: int, end: int) -> tuple[int, int]:
    """(width, height) of the VP8 key frame starting in this packet, or (0, 0).

    RFC 7741 section 4.2 payload descriptor, then RFC 6386 section 9.1: 3-byte frame tag, start code
    9d 01 2a, 14-bit width and height (little endian, 2 bits of scaling each). Called on key frames only.
    """
    if off >= end:
        return 0, 0
    i = off + 1
    if data[off] & 0x80:
        if i >= end:
            return 0, 0
        x = data[i]
        i += 1
        if x & 0x80:
            if i >= end:
                return 0, 0
            i += 2 if data[i] & 0x80 else 1
        if x & 0x40:
            i += 1
        if x & 0x30:
            i += 1
    if i + 10 > end or data[i + 3] != 0x9D or data[i + 4] != 0x01 or data[i + 5] != 0x2A:
        return 0, 0
    width = (data[i + 6] | (data[i + 7] << 8)) & 0x3FFF
    height = (data[i + 8] | (data[i + 9] << 8)) & 0x3FFF
    return width, height


def is_h264_key_frame(data: bytes | bytearray, off: int, end: int) -> bool:
    """An SPS or IDR NAL unit starts here: RFC 6184 single NAL, STAP-A (5.7.1) or FU-A start (5.8)."""
    if off >= end:
        return False
    nal = data[off] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 24:
        i = off + 1
        while i + 2 < end:
            if data[i + 2] & 0x1F in (5, 7):
                return True
            i += 2 + ((data[i] << 8) | data[i + 1])
        return False
    if nal == 28 and off + 1 < end:
        fu = data[off + 1]
        return bool(fu & 0x80) and fu & 0x1F in (5, 7)
    return False


def is_vp9_key_frame(data: bytes | bytearray, off: int, end: int) -> bool:
    """Start of a non-inter-predicted frame of spatial layer 0 (draft-ietf-payload-vp9 section 4.2)."""
    if off >= end:
        return False
    b = data[off]
    if b & 0x40 or not b & 0x08:  # P set, or not B (beginning of frame)
        return False
    i = off + 1
    if b & 0x80:  # I: picture id
        if i >= end:
            return False
        i += 2 if data[i] & 0x80 else 1
    if b & 0x20:  # L: layer indices, SID must be 0
        return i < end and not (data[i] >> 1) & 0x07
    return True


def never_key_frame(data: bytes | bytearray, off: int, end: int) -> bool:
    """Audio: no key frames (the forwarder starts at once)."""
    return False


KEY_FRAME_DETECTORS = {
    "video/vp8": is_vp8_key_frame,
    "video/h264": is_h264_key_frame,
    "video/vp9": is_vp9_key_frame,
}


def seq_newer(a: int, b: int) -> bool:
    """RFC 3550 appendix A.1 style serial comparison: True if `a` comes after `b` (mod 2**16)."""
    return a != b and ((a - b) & SEQ_MASK) < 0x8000
