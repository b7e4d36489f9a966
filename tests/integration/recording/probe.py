"""Recording test helpers: ffprobe in a subprocess, tracks that note when each frame was sent."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client_sdk.encoded import EncodedAudioTrack, EncodedClip, EncodedVideoTrack

FFPROBE = shutil.which("ffprobe") or ("/usr/bin/ffprobe" if Path("/usr/bin/ffprobe").exists() else None)


def require_ffprobe() -> str:
    if FFPROBE is None:
        pytest.skip("ffprobe is not installed (apt-get install ffmpeg); recorded files cannot be checked")
    return FFPROBE


@dataclass(frozen=True, slots=True)
class Probe:
    codec: str
    packet_sizes: list[int]
    packet_times: list[float]
    format_duration: float | None  # None when the trailer (Duration) was never written

    @property
    def span_s(self) -> float:
        return self.packet_times[-1] - self.packet_times[0] if self.packet_times else 0.0


async def probe(path: Path) -> Probe:
    """Codec, every packet's size and pts, and the container duration, as ffprobe reads them."""
    ffprobe = require_ffprobe()
    proc = await asyncio.create_subprocess_exec(
        ffprobe, "-v", "error", "-of", "json", "-show_entries",
        "stream=codec_name:format=duration:packet=size,pts_time", "-show_packets", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"ffprobe cannot read {path.name}: {err.decode(errors='replace')}"
    body: dict[str, Any] = json.loads(out)
    packets = body.get("packets", [])
    duration = body.get("format", {}).get("duration")
    return Probe(
        body["streams"][0]["codec_name"],
        [int(p["size"]) for p in packets],
        [float(p["pts_time"]) for p in packets],
        float(duration) if duration not in (None, "N/A") else None,
    )


class TimedVideoTrack(EncodedVideoTrack):
    """Notes the wall-clock time each frame is handed to the sender (index = clip frame index)."""

    def __init__(self, clip: EncodedClip) -> None:
        super().__init__(clip, loop=False)
        self.sent_at: list[float] = []

    async def recv(self) -> Any:
        packet = await super().recv()
        self.sent_at.append(time.time())
        return packet


class TimedAudioTrack(EncodedAudioTrack):
    def __init__(self, clip: EncodedClip) -> None:
        super().__init__(clip, loop=False)
        self.sent_at: list[float] = []

    async def recv(self) -> Any:
        packet = await super().recv()
        self.sent_at.append(time.time())
        return packet


def first_index(clip: EncodedClip, recorded: list[bytes]) -> int:
    """The clip index where `recorded` (the first few recorded frames) starts; -1 if nowhere."""
    frames = [f.data for f in clip.frames]
    n = len(recorded)
    for i in range(len(frames) - n + 1):
        if frames[i : i + n] == recorded:
            return i
    return -1


def read_frames(path: Path, count: int) -> list[bytes]:
    """The first `count` packets' bytes, demuxed with PyAV (no decoding)."""
    import av

    out: list[bytes] = []
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams[0]):
            if packet.size:
                out.append(bytes(packet))
            if len(out) == count:
                break
    return out
