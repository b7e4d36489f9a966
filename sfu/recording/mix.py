"""Offline mixdown of a recording: one file with every feed on its timeline, audio mixed, video in a grid.

    sfu recording mix RECORDING_ID [--out FILE] [--size 1280x720] [--fps 30] [--data-dir DIR]

Inputs are the recording's per-feed files and its manifest (`start_offset_ms` of each file from the
recording's start). The mix starts at the earliest file and ends with the latest one. Unlike recording,
this re-encodes (it runs offline, never in the server): every source is decoded with PyAV, video tiles are
scaled into a grid (aspect kept, black bars) and encoded as VP8, audio is resampled to 48 kHz mono,
summed with clipping, and encoded as Opus; WebM by default (`.mkv` works too). A feed that has not
started or has ended (for more than HOLD_S) shows black and is silent; a muted stretch (a gap in a
file) is silent and keeps the last picture. Memory stays bounded: sources are decoded as the output
advances, never whole.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import numpy as np

from sfu.store.base import RecordingRecord, Store

SAMPLE_RATE: Final = 48000
AUDIO_BLOCK: Final = 960  # 20 ms: one Opus frame
VIDEO_BITRATE: Final = 2_000_000
AUDIO_BITRATE: Final = 96_000
HOLD_S: Final = 0.5  # a video's last picture stays this long after its file ends (files end ms apart)


@dataclass(frozen=True, slots=True)
class MixResult:
    path: Path
    duration_s: float
    video_sources: int
    audio_sources: int
    frames: int
    decode_errors: int

    def to_wire(self) -> dict[str, Any]:
        return {"path": str(self.path), "duration_s": self.duration_s, "video_sources": self.video_sources,
                "audio_sources": self.audio_sources, "frames": self.frames,
                "decode_errors": self.decode_errors}

    def describe(self) -> str:
        return (f"mixed {self.video_sources} video and {self.audio_sources} audio file(s), "
                f"{self.duration_s:.1f} s, into {self.path}")


async def find_recording(store: Store, recording_id: str) -> RecordingRecord | None:
    """The recording's stored manifest, whichever client owns it (the CLI has no cid)."""
    for client in await store.list_clients():
        record = await store.get_recording(client.cid, recording_id)
        if record is not None:
            return record
    return None


class _Source:
    """One decoded file; `offset_s` places its time 0 on the mix's timeline."""

    def __init__(self, path: Path, kind: str, offset_s: float) -> None:
        self.path = path
        self.kind = kind
        self.offset_s = offset_s
        self.decode_errors = 0
        self._container: Any = av.open(str(path))
        self._frames = self._decode()

    def _decode(self) -> Iterator[Any]:
        container = self._container
        stream = container.streams.video[0] if self.kind == "video" else container.streams.audio[0]
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:  # a damaged packet: skip it, the next key frame recovers
                self.decode_errors += 1
                continue
            yield from frames

    def next_frame(self) -> Any | None:
        return next(self._frames, None)

    def close(self) -> None:
        self._container.close()


class _VideoTile(_Source):
    """Yields the picture to show at time t: the newest frame at or before t, scaled into its tile."""

    def __init__(self, path: Path, offset_s: float, end_s: float, box: tuple[int, int, int, int]) -> None:
        super().__init__(path, "video", offset_s)
        self.end_s = end_s
        self.box = box  # x, y, width, height of the tile on the canvas
        self._next = self.next_frame()
        self._picture: np.ndarray[Any, Any] | None = None

    def paint(self, canvas: np.ndarray[Any, Any], t: float) -> None:
        advanced = None
        while self._next is not None and (self._next.time is None or self.offset_s + self._next.time <= t):
            advanced = self._next
            self._next = self.next_frame()
        if advanced is not None:
            self._picture = self._fit(advanced)
        if self._picture is None or t > self.end_s + HOLD_S:
            return  # not started yet, or over (its participant left): the tile stays black
        x, y, w, h = self.box
        ph, pw = self._picture.shape[:2]
        top, left = y + (h - ph) // 2, x + (w - pw) // 2
        canvas[top : top + ph, left : left + pw] = self._picture

    def _fit(self, frame: Any) -> np.ndarray[Any, Any]:
        _, _, w, h = self.box
        scale = min(w / frame.width, h / frame.height)
        width = max(2, int(frame.width * scale) // 2 * 2)
        height = max(2, int(frame.height * scale) // 2 * 2)
        scaled = frame.reformat(width=width, height=height, format="rgb24")
        picture: np.ndarray[Any, Any] = scaled.to_ndarray()
        return picture


class _AudioTrack(_Source):
    """Serves 48 kHz mono float samples by absolute sample position; silence where the file has none."""

    def __init__(self, path: Path, offset_s: float) -> None:
        super().__init__(path, "audio", offset_s)
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._chunks: deque[tuple[int, np.ndarray[Any, Any]]] = deque()  # (start sample, samples)
        self._done = False

    def _pull(self) -> None:
        frame = self.next_frame()
        if frame is None:
            self._done = True
            return
        if frame.time is None:
            return
        start = round((self.offset_s + frame.time) * SAMPLE_RATE)
        for out in self._resampler.resample(frame):
            samples = out.to_ndarray().reshape(-1).astype(np.float32)
            self._chunks.append((start, samples))
            start += len(samples)

    def add_into(self, mix: np.ndarray[Any, Any], start: int) -> None:
        end = start + len(mix)
        while not self._done and (not self._chunks or self._chunks[-1][0] + len(self._chunks[-1][1]) < end):
            self._pull()
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= start:
            self._chunks.popleft()
        for chunk_start, samples in self._chunks:
            if chunk_start >= end:
                break
            lo, hi = max(start, chunk_start), min(end, chunk_start + len(samples))
            if lo < hi:
                mix[lo - start : hi - start] += samples[lo - chunk_start : hi - chunk_start]


def grid(count: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Tiles (x, y, w, h) for `count` videos: as square a grid as fits, filled row by row."""
    if count <= 0:
        return []
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    w, h = width // cols, height // rows
    return [((i % cols) * w, (i // cols) * h, w, h) for i in range(count)]


def mix(directory: Path, files: Sequence[dict[str, Any]], out: Path, *, width: int = 1280, height: int = 720,
        fps: int = 30) -> MixResult:
    """Writes the mix of the manifest's `files` (in `directory`) to `out`; CPU-bound, call it off a loop."""
    usable = [f for f in files if f.get("state") != "failed" and (directory / str(f["name"])).is_file()
              and f.get("frames")]
    if not usable:
        raise ValueError("the recording has no file to mix")
    origin_ms = min(int(f["start_offset_ms"]) for f in usable)
    duration_s = max(int(f["start_offset_ms"]) - origin_ms + int(f["duration_ms"]) for f in usable) / 1000
    videos = sorted((f for f in usable if f["kind"] == "video"),
                    key=lambda f: (int(f["start_offset_ms"]), str(f["name"])))
    audios = [f for f in usable if f["kind"] == "audio"]
    width, height = width // 2 * 2, height // 2 * 2
    tiles: list[_VideoTile] = []
    tracks: list[_AudioTrack] = []
    frames = 0
    try:
        for entry, box in zip(videos, grid(len(videos), width, height), strict=True):
            offset = (int(entry["start_offset_ms"]) - origin_ms) / 1000
            tiles.append(_VideoTile(directory / str(entry["name"]), offset,
                                    offset + int(entry["duration_ms"]) / 1000, box))
        for entry in audios:
            offset = (int(entry["start_offset_ms"]) - origin_ms) / 1000
            tracks.append(_AudioTrack(directory / str(entry["name"]), offset))
        with av.open(str(out), "w") as container:
            video_stream: Any = container.add_stream("libvpx", rate=fps)
            video_stream.width, video_stream.height, video_stream.pix_fmt = width, height, "yuv420p"
            video_stream.bit_rate = VIDEO_BITRATE
            video_stream.options = {"deadline": "realtime", "cpu-used": "8"}
            audio_stream: Any = container.add_stream("libopus", rate=SAMPLE_RATE)
            audio_stream.layout = "mono"
            audio_stream.bit_rate = AUDIO_BITRATE
            total_frames = max(1, round(duration_s * fps))
            total_samples = round(duration_s * SAMPLE_RATE)
            sample = 0
            for index in range(total_frames):
                t = index / fps
                canvas = np.zeros((height, width, 3), dtype=np.uint8)
                for tile in tiles:
                    tile.paint(canvas, t)
                picture = av.VideoFrame.from_ndarray(canvas, format="rgb24").reformat(format="yuv420p")
                picture.pts = index
                picture.time_base = Fraction(1, fps)
                container.mux(video_stream.encode(picture))
                frames += 1
                until = min(total_samples, round((index + 1) / fps * SAMPLE_RATE))
                while sample < until:
                    container.mux(audio_stream.encode(_audio_block(tracks, sample)))
                    sample += AUDIO_BLOCK
            container.mux(video_stream.encode(None))
            container.mux(audio_stream.encode(None))
    finally:
        for source in (*tiles, *tracks):
            source.close()
    errors = sum(s.decode_errors for s in (*tiles, *tracks))
    return MixResult(out, duration_s, len(tiles), len(tracks), frames, errors)


def _audio_block(tracks: Sequence[_AudioTrack], start: int) -> Any:
    block = np.zeros(AUDIO_BLOCK, dtype=np.float32)
    for track in tracks:
        track.add_into(block, start)
    pcm = (np.clip(block, -1.0, 1.0) * 32767).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = start
    frame.time_base = Fraction(1, SAMPLE_RATE)
    return frame


def parse_size(text: str) -> tuple[int, int]:
    """`1280x720` -> (1280, 720); ValueError otherwise."""
    found = text.lower().split("x")
    if len(found) != 2 or not all(part.isdigit() and int(part) >= 16 for part in found):
        raise ValueError(f"size must look like 1280x720, not {text!r}")
    return int(found[0]), int(found[1])


def mix_recording(record: RecordingRecord, data_dir: Path, out: Path | None, size: str = "1280x720",
                  fps: int = 30) -> MixResult:
    """The CLI's work: the recording's files are in `<data_dir>/recordings/<id>/`; default output
    `<that directory>/mix.webm` (not part of the manifest, so the REST API never serves it)."""
    width, height = parse_size(size)
    if not 1 <= fps <= 120:
        raise ValueError("fps must be between 1 and 120")
    directory = Path(data_dir) / "recordings" / record.recording_id
    return mix(directory, record.files, out or directory / "mix.webm", width=width, height=height, fps=fps)

