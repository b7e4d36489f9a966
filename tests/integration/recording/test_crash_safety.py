"""`sfu serve` as a subprocess recording a real publisher: SIGTERM finalizes files, SIGKILL keeps them readable."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import client_sdk
from client_sdk.admin import AdminClient
from client_sdk.encoded import EncodedAudioTrack, EncodedVideoTrack
from client_sdk.tokens import create_admin_token, create_token
from loadtest.media import encode_opus, encode_vp8
from tests.integration.recording.probe import Probe, probe, require_ffprobe

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True, slots=True)
class Served:
    proc: asyncio.subprocess.Process
    url: str
    key_id: str
    secret: str

    def admin(self) -> AdminClient:
        return AdminClient(self.url, create_admin_token(self.key_id, self.secret))


@asynccontextmanager
async def serve(data_dir: Path, log: Path) -> AsyncIterator[Served]:
    """`python -m sfu serve --port 0`; killed at the end whatever the test did to it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_")}
    with log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sfu", "serve", "--port", "0", "--data-dir", str(data_dir),
            "--ice-host", "127.0.0.1", "--log-level", "warning",
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )
    try:
        assert proc.stdout is not None
        banner = ""
        while "demo page" not in banner:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                raise AssertionError(f"serve exited early: {log.read_text()}")
            banner += line.decode()
        port = re.search(r"listening on http://127\.0\.0\.1:(\d+)", banner)
        key = re.search(r"key_id=(k_\w+) secret=(sk_\S+)", banner)
        assert port is not None and key is not None, banner
        yield Served(proc, f"http://127.0.0.1:{port.group(1)}", key.group(1), key.group(2))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _record(served: Served, seconds: float) -> tuple[str, client_sdk.Session, float]:
    """Publishes VP8 + Opus into `served`, records `seconds`; returns (recording id, publisher, start)."""
    video = EncodedVideoTrack(encode_vp8(320, 240, fps=30, seconds=20, bitrate_bps=300_000,
                                         keyframe_interval_s=1), loop=False)
    audio = EncodedAudioTrack(encode_opus(seconds=20), loop=False)
    alice = client_sdk.Session(served.url, token=create_token(served.key_id, served.secret, "room",
                                                               "alice"), reconnect=False)
    await alice.join()
    await alice.publish_many([(video, "camera", None), (audio, "microphone", None)])
    await asyncio.sleep(1.0)  # media flowing
    async with served.admin() as admin:
        started = time.time()
        recording_id = await admin.start_recording("room")
    await asyncio.sleep(seconds)
    return recording_id, alice, started


async def _probe_all(directory: Path) -> dict[str, Probe]:
    return {path.suffix + ":" + (await probe(path)).codec: await probe(path) for path in sorted(directory.iterdir())}


async def test_sigterm_finalizes_every_file_and_the_manifest(tmp_path: Path) -> None:
    require_ffprobe()
    data = tmp_path / "data"
    async with serve(data, tmp_path / "serve.log") as served:
        recording_id, alice, _ = await _record(served, 6.0)
        try:
            served.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(served.proc.wait(), 30) == 0
        finally:
            await alice.close()
    probes = await _probe_all(data / "recordings" / recording_id)
    assert set(probes) == {".webm:vp8", ".webm:opus"}
    for found in probes.values():
        assert found.format_duration is not None, "the trailer was not written"
        assert abs(found.format_duration - found.span_s) < 0.1
    assert probes[".webm:opus"].span_s > 5.5
    assert probes[".webm:vp8"].span_s > 4.5  # the clip has a key frame every second
    async with serve(data, tmp_path / "serve.log") as served, served.admin() as admin:
        record = await admin.get_recording(recording_id)
        assert record["state"] == "stopped"
        assert sorted(f["state"] for f in record["files"]) == ["complete", "complete"]
        by_kind = {f["kind"]: f for f in record["files"]}
        assert abs(by_kind["audio"]["duration_ms"] / 1000 - probes[".webm:opus"].format_duration) < 0.1  # type: ignore[operator]


async def test_sigkill_leaves_files_readable_up_to_the_last_seconds(tmp_path: Path) -> None:
    require_ffprobe()
    data = tmp_path / "data"
    async with serve(data, tmp_path / "serve.log") as served:
        recording_id, alice, started = await _record(served, 10.0)
        try:
            served.proc.kill()
            killed = time.time()
            await served.proc.wait()
        finally:
            await alice.close()
    probes = await _probe_all(data / "recordings" / recording_id)
    assert set(probes) == {".webm:vp8", ".webm:opus"}
    audio_lost_s = (killed - started) - probes[".webm:opus"].span_s
    video_lost_s = (killed - started) - probes[".webm:vp8"].span_s
    print(f"after SIGKILL: audio readable up to {audio_lost_s:.2f} s before the kill, video {video_lost_s:.2f} s "
          "(video starts at the first key frame)")
    assert audio_lost_s < 5.0
    assert video_lost_s < 5.0 + 1.0  # plus up to one key-frame interval before video starts
    async with serve(data, tmp_path / "serve.log") as served, served.admin() as admin:
        record = await admin.get_recording(recording_id)
        assert record["state"] == "interrupted"
        assert {f["kind"] for f in record["files"]} == {"audio", "video"}
