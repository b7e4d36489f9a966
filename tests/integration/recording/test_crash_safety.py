"""`sfu serve` as a child records a real publisher: SIGTERM finalizes files, SIGKILL keeps them readable."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import client_sdk
from client_sdk.encoded import EncodedAudioTrack, EncodedVideoTrack
from client_sdk.tokens import create_token
from loadtest.media import encode_opus, encode_vp8
from tests.integration.recording.probe import Probe, Served, probe, require_ffprobe, serve


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
    """`{".webm:vp8": probe, ...}` for every file of a recording directory."""
    out: dict[str, Probe] = {}
    for path in sorted(await asyncio.to_thread(lambda: list(directory.iterdir()))):
        found = await probe(path)
        out[f"{path.suffix}:{found.codec}"] = found
    return out


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
        assert abs(by_kind["audio"]["duration_ms"] / 1000 - (probes[".webm:opus"].format_duration or 0)) < 0.1


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
    print(f"after SIGKILL: audio readable up to {audio_lost_s:.2f} s before the kill, "
          f"video {video_lost_s:.2f} s")
    assert audio_lost_s < 5.0
    assert video_lost_s < 5.0 + 1.0  # plus up to one key-frame interval before video starts
    async with serve(data, tmp_path / "serve.log") as served, served.admin() as admin:
        record = await admin.get_recording(recording_id)
        assert record["state"] == "interrupted"
        assert {f["kind"] for f in record["files"]} == {"audio", "video"}
