"""Pre-encoded media for publishers: encoded once with PyAV, cached on disk, replayed without encoding.

A load test with many publishers cannot afford an encoder per track (~5 ms per 640x360 frame), so clips
are encoded once per parameter set and stored in one file: a JSON header, then the frames back to back.
The clip types live in `client_sdk.encoded` (the tracks that replay them) and are re-exported here.
Video time bases are 1/90000 (the RTP clock, RFC 7741 section 4.1), audio 1/48000 (RFC 7587 section 4).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import numpy as np

from client_sdk.encoded import EncodedClip, EncodedFrame

__all__ = [
    "EncodedClip",
    "EncodedFrame",
    "encode_h264",
    "encode_opus",
    "encode_vp8",
    "has_h264_encoder",
    "load_clip",
    "save_clip",
]

CACHE_VERSION: Final = 1
VIDEO_CLOCK_RATE: Final = 90000
AUDIO_CLOCK_RATE: Final = 48000
OPUS_FRAME_SAMPLES: Final = 960  # 20 ms at 48 kHz
_HEADER_SIZE: Final = struct.Struct("!I")


def default_cache_dir() -> Path:
    """`$PYSFU_CACHE_DIR`, else `~/.cache/pysfu`."""
    env = os.environ.get("PYSFU_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "pysfu"


def save_clip(clip: EncodedClip, path: Path) -> None:
    """Writes atomically (temp file + rename) so concurrent test workers never read half a file."""
    header = {
        "version": CACHE_VERSION,
        "codec": clip.codec,
        "time_base": [clip.time_base.numerator, clip.time_base.denominator],
        "duration_pts": clip.duration_pts,
        "width": clip.width,
        "height": clip.height,
        "sample_rate": clip.sample_rate,
        "channels": clip.channels,
        "frames": [[f.pts, int(f.keyframe), len(f.data)] for f in clip.frames],
    }
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as out:
        out.write(_HEADER_SIZE.pack(len(raw)))
        out.write(raw)
        for f in clip.frames:
            out.write(f.data)
    os.replace(tmp, path)


def load_clip(path: Path) -> EncodedClip | None:
    """The clip stored at `path`, or None if missing, of another version, or corrupt."""
    try:
        blob = path.read_bytes()
        (size,) = _HEADER_SIZE.unpack_from(blob, 0)
        header = json.loads(blob[4 : 4 + size])
        if header.get("version") != CACHE_VERSION:
            return None
        offset = 4 + size
        frames = []
        for pts, keyframe, length in header["frames"]:
            frames.append(EncodedFrame(blob[offset : offset + length], pts, bool(keyframe)))
            offset += length
        if offset != len(blob):
            return None
        return EncodedClip(
            header["codec"],
            Fraction(*header["time_base"]),
            tuple(frames),
            header["duration_pts"],
            header["width"],
            header["height"],
            header["sample_rate"],
            header["channels"],
        )
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def _cached(cache_dir: Path | None, params: dict[str, Any], make: Callable[[], EncodedClip]) -> EncodedClip:
    key = json.dumps(params, sort_keys=True)
    digest = hashlib.sha256(f"{CACHE_VERSION}:{av.__version__}:{key}".encode()).hexdigest()[:16]
    path = (cache_dir or default_cache_dir()) / f"{params['codec']}-{digest}.clip"
    clip = load_clip(path)
    if clip is None:
        clip = make()
        save_clip(clip, path)
    return clip


def _pattern(width: int, height: int, index: int, fps: int) -> av.VideoFrame:
    """A moving test pattern: diagonal gradient scrolling, a bright bar sweeping, chroma drifting."""
    x = np.arange(width, dtype=np.uint16)
    y = np.arange(height, dtype=np.uint16)[:, None]
    luma = ((x + y + index * 4) & 0xFF).astype(np.uint8)
    bar = (index * max(width // (2 * fps), 2)) % width
    luma[:, bar : bar + width // 16] = 235
    cw, ch = width // 2, height // 2
    u = np.full((ch, cw), (64 + index) & 0xFF, dtype=np.uint8)
    v = np.full((ch, cw), (192 - index) & 0xFF, dtype=np.uint8)
    planes = np.concatenate([luma, u.reshape(-1, width), v.reshape(-1, width)])
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def _encode_video(
    codec_name: str,
    options: dict[str, str],
    width: int,
    height: int,
    fps: int,
    seconds: float,
    bitrate_bps: int,
    keyframe_interval_s: float,
) -> EncodedClip:
    ctx: Any = av.CodecContext.create(codec_name, "w")
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps, 1)
    ctx.bit_rate = bitrate_bps
    gop = max(1, round(keyframe_interval_s * fps))
    ctx.gop_size = gop
    ctx.options = options
    ctx.open()
    count = max(1, round(seconds * fps))
    packets: list[Any] = []
    for index in range(count):
        frame = _pattern(width, height, index, fps)
        frame.pts = index
        frame.time_base = ctx.time_base
        # NOTE: forced I frames make key frames land exactly every `gop` frames whatever the encoder does
        frame.pict_type = (
            av.video.frame.PictureType.I if index % gop == 0 else av.video.frame.PictureType.NONE
        )
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    step = VIDEO_CLOCK_RATE // fps
    frames = tuple(EncodedFrame(bytes(p), int(p.pts) * step, bool(p.is_keyframe)) for p in packets if p.size)
    return EncodedClip(
        "vp8" if codec_name == "libvpx" else "h264",
        Fraction(1, VIDEO_CLOCK_RATE),
        frames,
        count * step,
        width=width,
        height=height,
    )


def encode_vp8(
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    seconds: float = 10.0,
    bitrate_bps: int = 800_000,
    keyframe_interval_s: float = 2.0,
    cache_dir: Path | None = None,
) -> EncodedClip:
    """A VP8 clip of a moving test pattern (cached by parameters)."""
    params = {"codec": "vp8", "w": width, "h": height, "fps": fps, "s": seconds, "bps": bitrate_bps,
              "ki": keyframe_interval_s}  # fmt: skip
    threads = str(min(os.cpu_count() or 1, 4))
    options = {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0", "threads": threads}
    return _cached(
        cache_dir,
        params,
        lambda: _encode_video(
            "libvpx", options, width, height, fps, seconds, bitrate_bps, keyframe_interval_s
        ),
    )


def has_h264_encoder() -> bool:
    """Whether this PyAV build has libx264."""
    try:
        av.codec.Codec("libx264", "w")
    except Exception:  # NOTE: PyAV raises UnknownCodecError or ValueError depending on version
        return False
    return True


def encode_h264(
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    seconds: float = 10.0,
    bitrate_bps: int = 800_000,
    keyframe_interval_s: float = 2.0,
    cache_dir: Path | None = None,
) -> EncodedClip:
    """An H.264 constrained-baseline clip (Annex B, no B-frames), as aiortc's 42e01f packetizer expects."""
    params = {"codec": "h264", "w": width, "h": height, "fps": fps, "s": seconds, "bps": bitrate_bps,
              "ki": keyframe_interval_s}  # fmt: skip
    gop = max(1, round(keyframe_interval_s * fps))
    options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "profile": "baseline",
        "level": "3.1",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1",
    }
    return _cached(
        cache_dir,
        params,
        lambda: _encode_video(
            "libx264", options, width, height, fps, seconds, bitrate_bps, keyframe_interval_s
        ),
    )


def _encode_opus(seconds: float, bitrate_bps: int, tone_hz: float) -> EncodedClip:
    ctx: Any = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = AUDIO_CLOCK_RATE
    ctx.layout = "stereo"
    ctx.format = "s16"
    ctx.bit_rate = bitrate_bps
    ctx.time_base = Fraction(1, AUDIO_CLOCK_RATE)
    ctx.open()
    count = max(1, round(seconds * AUDIO_CLOCK_RATE / OPUS_FRAME_SAMPLES))
    t = np.arange(count * OPUS_FRAME_SAMPLES) / AUDIO_CLOCK_RATE
    # a tone with a 2 Hz amplitude envelope, so audio levels vary
    mono = (8000 * np.sin(2 * np.pi * tone_hz * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(np.int16)
    stereo = np.repeat(mono, 2)
    packets: list[Any] = []
    for index in range(count):
        chunk = stereo[index * 2 * OPUS_FRAME_SAMPLES : (index + 1) * 2 * OPUS_FRAME_SAMPLES]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = AUDIO_CLOCK_RATE
        frame.pts = index * OPUS_FRAME_SAMPLES
        frame.time_base = ctx.time_base
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    # NOTE: libopus reports a negative first pts (encoder delay): renumber, one packet per 20 ms
    payloads = [bytes(p) for p in packets if p.size][:count]
    frames = tuple(EncodedFrame(data, i * OPUS_FRAME_SAMPLES, True) for i, data in enumerate(payloads))
    return EncodedClip(
        "opus",
        Fraction(1, AUDIO_CLOCK_RATE),
        frames,
        len(frames) * OPUS_FRAME_SAMPLES,
        sample_rate=AUDIO_CLOCK_RATE,
        channels=2,
    )


def encode_opus(
    seconds: float = 10.0, bitrate_bps: int = 32_000, tone_hz: float = 440.0, cache_dir: Path | None = None
) -> EncodedClip:
    """An Opus clip (48 kHz stereo, 20 ms packets) of a tone (cached by parameters)."""
    params = {"codec": "opus", "s": seconds, "bps": bitrate_bps, "hz": tone_hz}
    return _cached(cache_dir, params, lambda: _encode_opus(seconds, bitrate_bps, tone_hz))
