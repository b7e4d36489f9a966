"""Picture size from a key frame, for the container header (Matroska needs PixelWidth/PixelHeight).

VP8: the key frame header (RFC 6386 section 9.1). VP9: the uncompressed header of a key frame (VP9 bitstream
specification section 6.2). H.264: the sequence parameter set (ITU-T H.264 section
7.3.2.1.1), read with exp-Golomb codes after removing emulation prevention bytes (section 7.4.1).
"""

from __future__ import annotations

from typing import Final

# profile_idc values whose SPS carries chroma format and bit depths (H.264 7.3.2.1.1)
_HIGH_PROFILES: Final = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


def vp8_dimensions(frame: bytes) -> tuple[int, int]:
    """Width and height of a VP8 key frame, (0, 0) if `frame` is not one."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return 0, 0
    return int.from_bytes(frame[6:8], "little") & 0x3FFF, int.from_bytes(frame[8:10], "little") & 0x3FFF


class _Bits:
    """MSB-first bit reader with exp-Golomb codes; reading past the end raises IndexError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise IndexError("exp-golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def vp9_dimensions(frame: bytes) -> tuple[int, int]:
    """Width and height from a VP9 key frame's uncompressed header, (0, 0) if `frame` is not one."""
    bits = _Bits(frame)
    try:
        if bits.u(2) != 2:  # frame_marker
            return 0, 0
        profile = bits.u(1) | (bits.u(1) << 1)
        if profile == 3:
            bits.u(1)
        if bits.u(1) or bits.u(1):  # show_existing_frame, frame_type != KEY_FRAME
            return 0, 0
        bits.u(2)  # show_frame, error_resilient_mode
        if bits.u(24) != 0x498342:  # frame_sync_code
            return 0, 0
        if profile >= 2:
            bits.u(1)  # ten_or_twelve_bit
        if bits.u(3) != 7:  # color_space other than CS_RGB
            bits.u(1)  # color_range
            if profile in (1, 3):
                bits.u(3)  # subsampling_x, subsampling_y, reserved_zero
        elif profile in (1, 3):
            bits.u(1)
        return bits.u(16) + 1, bits.u(16) + 1
    except IndexError:
        return 0, 0


def _unescape(nal: bytes) -> bytes:
    """Drops emulation prevention bytes: 00 00 03 -> 00 00 (H.264 7.4.1)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale:
            next_scale = (last + bits.se() + 256) % 256
        last = next_scale or last


def h264_sps_dimensions(sps: bytes) -> tuple[int, int]:
    """Cropped width and height from an SPS NAL unit (header byte included); (0, 0) if unreadable."""
    try:
        return _sps_dimensions(_Bits(_unescape(sps[1:])))
    except IndexError:
        return 0, 0


def _sps_dimensions(bits: _Bits) -> tuple[int, int]:
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level_idc
    bits.ue()  # seq_parameter_set_id
    chroma = 1
    if profile in _HIGH_PROFILES:
        chroma = bits.ue()
        if chroma == 3:
            bits.u(1)  # separate_colour_plane_flag
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if bits.u(1):
        crop = (bits.ue(), bits.ue(), bits.ue(), bits.ue())
    sub_width, sub_height = {1: (2, 2), 2: (2, 1)}.get(chroma, (1, 1))
    crop_x = sub_width if chroma else 1
    crop_y = (sub_height if chroma else 1) * (2 - frame_mbs_only)
    width = width_mbs * 16 - (crop[0] + crop[1]) * crop_x
    height = (2 - frame_mbs_only) * height_units * 16 - (crop[2] + crop[3]) * crop_y
    return width, height


def h264_dimensions(access_unit: bytes) -> tuple[int, int]:
    """Size from the first SPS of an Annex B access unit; (0, 0) if it has none."""
    for nal in access_unit.split(b"\x00\x00\x01"):
        nal = nal.rstrip(b"\x00")  # a 4-byte start code leaves a zero on the previous unit
        if nal and nal[0] & 0x1F == 7:
            return h264_sps_dimensions(nal)
    return 0, 0
