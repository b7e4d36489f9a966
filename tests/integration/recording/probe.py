"""Recording test helpers: ffprobe, tracks that note when each frame was sent, `sfu serve` as a child."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client_sdk.admin import AdminClient
from client_sdk.encoded import EncodedAudioTrack, EncodedClip, EncodedVideoTrack
from client_sdk.tokens import create_admin_token

REPO = Path(__file__).resolve().parents[3]

FFPROBE = shutil.which("ffprobe") or ("/usr/bin/ffprobe" if Path("/usr/bin/ffprobe").exists() else None)


FFMPEG = shutil.which("ffmpeg")


def decode_errors(path: Path) -> str:
    """What `ffmpeg -v error` says while decoding every frame of `path` ("" when it decodes cleanly)."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    result = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, check=False)
    return result.stderr + ("" if result.returncode == 0 else f"exit {result.returncode}")


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


@dataclass(frozen=True, slots=True)
class Served:
    proc: asyncio.subprocess.Process
    url: str
    key_id: str
    secret: str

    def admin(self) -> AdminClient:
        return AdminClient(self.url, create_admin_token(self.key_id, self.secret))


@asynccontextmanager
async def serve(data_dir: Path, log: Path, wrap: Sequence[str] = ()) -> AsyncIterator[Served]:
    """`python -m sfu serve --port 0` (after `wrap`, e.g. a namespace); killed at the end in any case."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_")}
    command = (sys.executable, "-m", "sfu", "serve", "--port", "0", "--data-dir", str(data_dir),
               "--ice-host", "127.0.0.1", "--log-level", "warning")
    with log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *wrap, *command, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
    try:
        assert proc.stdout is not None
        banner = ""
        while "demo page" not in banner:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                raise AssertionError("serve exited early (see serve.log)")
            banner += line.decode()
        port = re.search(r"listening on http://127\.0\.0\.1:(\d+)", banner)
        key = re.search(r"key_id=(k_\w+) secret=(sk_\S+)", banner)
        assert port is not None and key is not None, banner
        yield Served(proc, f"http://127.0.0.1:{port.group(1)}", key.group(1), key.group(2))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
