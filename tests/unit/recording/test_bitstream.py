"""Picture sizes read from key frames, checked against what the encoders were asked for."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

from loadtest.media import encode_h264, encode_vp8, has_h264_encoder
from sfu.recording.bitstream import h264_dimensions, vp8_dimensions, vp9_dimensions


def encode_vp9(width: int, height: int, count: int) -> list[tuple[bytes, bool]]:
    """A few VP9 frames from libvpx-vp9, as (data, key frame)."""
    ctx: Any = av.CodecContext.create("libvpx-vp9", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = width, height, "yuv420p", Fraction(1, 30)
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packets: list[Any] = []
    for index in range(count):
        image = np.full((height, width, 3), index * 8 % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    return [(bytes(p), bool(p.is_keyframe)) for p in packets]


@pytest.mark.parametrize(("width", "height"), [(320, 240), (640, 360), (1280, 720)])
def test_vp8_and_vp9_key_frames_give_their_size_and_inter_frames_none(width: int, height: int) -> None:
    vp8 = encode_vp8(width, height, fps=30, seconds=0.2)
    assert vp8_dimensions(vp8.frames[0].data) == (width, height)
    assert vp8_dimensions(vp8.frames[1].data) == (0, 0)
    vp9 = encode_vp9(width, height, 3)
    assert vp9[0][1] and vp9_dimensions(vp9[0][0]) == (width, height)
    assert vp9_dimensions(vp9[1][0]) == (0, 0)


@pytest.mark.skipif(not has_h264_encoder(), reason="this PyAV build has no libx264")
@pytest.mark.parametrize(("width", "height"), [(320, 240), (640, 360), (1280, 720)])
def test_h264_size_comes_from_the_sps_with_cropping(width: int, height: int) -> None:
    clip = encode_h264(width, height, fps=30, seconds=0.2)
    assert h264_dimensions(clip.frames[0].data) == (width, height)
    assert h264_dimensions(b"\x00\x00\x00\x01\x41\x9a") == (0, 0)
