"""Pre-encoded clips: the right frames, key frames where asked, decodable, and cached by parameters."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from loadtest import media
from loadtest.media import EncodedClip, encode_h264, encode_opus, encode_vp8, has_h264_encoder, load_clip


def decode(clip: EncodedClip) -> list[Any]:
    ctx: Any = av.CodecContext.create(clip.codec, "r")
    frames: list[Any] = []
    for f in clip.frames:
        frames.extend(ctx.decode(av.Packet(f.data)))
    return frames


@pytest.mark.parametrize(
    ("fps", "seconds", "keyframe_interval_s", "key_indexes"),
    [
        (10, 1.0, 0.5, [0, 5]),
        (15, 2.0, 1.0, [0, 15]),
        (30, 0.5, 10.0, [0]),
    ],
)
def test_vp8_clip_has_one_frame_per_tick_and_key_frames_at_the_interval(
    tmp_path: Path, fps: int, seconds: float, keyframe_interval_s: float, key_indexes: list[int]
) -> None:
    clip = encode_vp8(160, 96, fps, seconds, 200_000, keyframe_interval_s, cache_dir=tmp_path)
    count = round(fps * seconds)
    assert clip.codec == "vp8"
    assert clip.kind == "video"
    assert clip.time_base == Fraction(1, 90000)
    assert [f.pts for f in clip.frames] == [i * 90000 // fps for i in range(count)]
    assert clip.duration_pts == count * 90000 // fps
    assert [i for i, f in enumerate(clip.frames) if f.keyframe] == key_indexes


def test_vp8_clip_decodes_to_distinct_frames_of_the_asked_size(tmp_path: Path) -> None:
    clip = encode_vp8(160, 96, 10, 1.0, 200_000, 1.0, cache_dir=tmp_path)
    frames = decode(clip)
    assert len(frames) == len(clip.frames)
    assert {(f.width, f.height) for f in frames} == {(160, 96)}
    assert len({f.to_ndarray().tobytes() for f in frames}) == len(frames)


def test_a_second_call_with_the_same_parameters_reads_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = encode_vp8(160, 96, 10, 0.5, 200_000, 1.0, cache_dir=tmp_path)

    def fail(*_: Any) -> EncodedClip:
        raise AssertionError("encoded again")

    monkeypatch.setattr(media, "_encode_video", fail)
    assert encode_vp8(160, 96, 10, 0.5, 200_000, 1.0, cache_dir=tmp_path) == first
    with pytest.raises(AssertionError, match="encoded again"):
        encode_vp8(160, 96, 10, 0.5, 300_000, 1.0, cache_dir=tmp_path)


def test_a_corrupt_cache_file_is_encoded_again(tmp_path: Path) -> None:
    first = encode_opus(0.2, 32_000, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    path.write_bytes(path.read_bytes()[:-3])
    assert load_clip(path) is None
    assert encode_opus(0.2, 32_000, cache_dir=tmp_path) == first
    assert load_clip(path) == first


def test_opus_clip_has_20_ms_packets_that_decode(tmp_path: Path) -> None:
    clip = encode_opus(1.0, 32_000, cache_dir=tmp_path)
    assert clip.kind == "audio"
    assert (clip.sample_rate, clip.channels, clip.time_base) == (48000, 2, Fraction(1, 48000))
    assert [f.pts for f in clip.frames] == [i * 960 for i in range(50)]
    assert clip.duration_pts == 48000
    assert sum(f.samples for f in decode(clip)) == 48000


@pytest.mark.skipif(not has_h264_encoder(), reason="this PyAV build has no libx264")
def test_h264_clip_is_annex_b_with_key_frames_at_the_interval(tmp_path: Path) -> None:
    clip = encode_h264(160, 96, 10, 1.0, 200_000, 0.5, cache_dir=tmp_path)
    assert clip.codec == "h264"
    assert [i for i, f in enumerate(clip.frames) if f.keyframe] == [0, 5]
    assert all(f.data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")) for f in clip.frames)
    assert len(decode(clip)) == 10
