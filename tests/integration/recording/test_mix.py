"""`sfu recording mix`: a real two-participant recording becomes one file, one video + one audio stream,
as long as the recording's timeline, with both pictures in the grid and the audio mixed."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest

from client_sdk.admin import AdminClient
from client_sdk.encoded import EncodedAudioTrack, EncodedVideoTrack
from loadtest.media import encode_opus, encode_vp8
from tests.integration.recording.probe import REPO, require_ffprobe
from tests.integration.sdk.conftest import Sessions
from tests.support import Credentials, RunningServer, wait_until


@pytest.fixture
async def sessions(server: RunningServer) -> AsyncIterator[Sessions]:
    opened = Sessions(server.url)
    try:
        yield opened
    finally:
        await opened.close_all()


async def ffprobe_streams(path: Path) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        require_ffprobe(), "-v", "error", "-of", "json", "-show_streams", "-show_format", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    body: dict[str, object] = json.loads(out)
    return body


async def test_mix_lays_two_participants_out_on_the_recording_timeline(
    server: RunningServer, creds: Credentials, sessions: Sessions, tmp_path: Path
) -> None:
    require_ffprobe()
    video_clip = encode_vp8(320, 240, fps=30, seconds=10, bitrate_bps=300_000, keyframe_interval_s=1)
    audio_clip = encode_opus(seconds=10)
    session = server.server.registry

    async def join(uid: str) -> None:
        participant = await sessions.connect(token=creds.token("room", uid), auto_subscribe=False)
        feeds = await participant.publish_many([
            (EncodedVideoTrack(video_clip, loop=True), "camera", None),
            (EncodedAudioTrack(audio_clip, loop=True), "microphone", None),
        ])
        live = session.get(creds.cid, "room")
        assert live is not None and live.media is not None
        media = live.media

        def flowing() -> bool:
            receivers = [media.receivers_by_feed.get(f.feed_id) for f in feeds]
            return all(r is not None and r.packets > 10 for r in receivers)

        await wait_until(flowing, timeout_s=15)

    await join("alice")
    async with AdminClient(server.url, creds.admin_token()) as admin:
        recording_id = await admin.start_recording("room")
        await asyncio.sleep(1.0)
        await join("bob")  # published later: its files start later on the timeline
        await asyncio.sleep(3.0)
        result = await admin.stop_recording("room", recording_id)
    files = result["files"]
    assert sorted(f["kind"] for f in files) == ["audio", "audio", "video", "video"]
    origin = min(f["start_offset_ms"] for f in files)
    expected_s = max(f["start_offset_ms"] - origin + f["duration_ms"] for f in files) / 1000
    assert max(f["start_offset_ms"] for f in files) - origin >= 800  # bob's files really start later

    out = tmp_path / "mix.webm"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sfu", "recording", "mix", recording_id, "--data-dir",
        str(server.config.data_dir), "--out", str(out), "--size", "640x240", "--json",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()
    report = json.loads(stdout)
    assert (report["video_sources"], report["audio_sources"], report["decode_errors"]) == (2, 2, 0)

    probed = await ffprobe_streams(out)
    streams = probed["streams"]
    assert isinstance(streams, list)
    kinds = sorted((s["codec_type"], s["codec_name"]) for s in streams)
    assert kinds == [("audio", "opus"), ("video", "vp8")]
    video = next(s for s in streams if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (640, 240)
    fmt = probed["format"]
    assert isinstance(fmt, dict)
    assert abs(float(fmt["duration"]) - expected_s) <= 0.3, (fmt["duration"], expected_s)

    # at first only alice's tile (left) shows a picture; from bob's start on, both do, to the very end
    bob_s = (max(f["start_offset_ms"] for f in files if f["kind"] == "video") - origin) / 1000
    with av.open(str(out)) as container:
        tiles = [(float(f.time or 0), f.to_ndarray(format="gray")) for f in container.decode(video=0)]
    lit = [(t, p[:, :320].mean() > 20, p[:, 320:].mean() > 20) for t, p in tiles]
    assert any(left and not right for t, left, right in lit if t < bob_s - 0.1)
    assert all(left and right for t, left, right in lit if t > bob_s + 0.1)
    with av.open(str(out)) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 0.01
