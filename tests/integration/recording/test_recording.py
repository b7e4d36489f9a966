"""Record -> stop -> ffprobe with the server in-process and real aiortc peers publishing pre-encoded media."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import client_sdk
from client_sdk import Recording
from client_sdk.admin import AdminClient
from client_sdk.errors import NotFound
from loadtest.media import encode_opus, encode_vp8
from tests.integration.recording.probe import (
    TimedAudioTrack,
    TimedVideoTrack,
    first_index,
    probe,
    read_frames,
    require_ffprobe,
)
from tests.integration.sdk.conftest import Sessions
from tests.support import Credentials, RunningServer, start_server, wait_until

RECORD_S = 8.0
FPS = 30


@pytest.fixture
async def sessions(server: RunningServer) -> Any:
    opened = Sessions(server.url)
    try:
        yield opened
    finally:
        await opened.close_all()


async def _publish(sessions: Sessions, creds: Credentials, server: RunningServer
                   ) -> tuple[TimedVideoTrack, TimedAudioTrack, str, str]:
    video_clip = encode_vp8(320, 240, fps=FPS, seconds=20, bitrate_bps=300_000, keyframe_interval_s=2)
    audio_clip = encode_opus(seconds=20)
    alice = await sessions.connect(token=creds.token("room", "alice"))
    video, audio = TimedVideoTrack(video_clip), TimedAudioTrack(audio_clip)
    feeds = await alice.publish_many([(video, "camera", "cam"), (audio, "microphone", "mic")])
    session = server.server.registry.get(creds.cid, "room")
    assert session is not None and session.media is not None
    media = session.media

    def flowing() -> bool:
        receivers = [media.receivers_by_feed.get(f.feed_id or "") for f in feeds]
        return all(r is not None and r.packets > 20 for r in receivers)

    await wait_until(flowing, timeout_s=15)
    return video, audio, feeds[0].feed_id or "", feeds[1].feed_id or ""


async def test_a_recording_holds_the_published_frames_byte_for_byte_with_true_timing(
    server: RunningServer, creds: Credentials, sessions: Sessions, tmp_path: Path
) -> None:
    require_ffprobe()
    watcher = await sessions.connect(token=creds.token("room", "watcher"), auto_subscribe=False)
    events = watcher.events()
    video, audio, video_feed, audio_feed = await _publish(sessions, creds, server)
    async with AdminClient(server.url, creds.admin_token()) as admin:
        recording_id = await admin.start_recording("room")
        started = await events.next(Recording)
        assert (started.state, started.recording_id) == ("started", recording_id)
        late = client_sdk.Session(server.url, token=creds.token("room", "late"), auto_subscribe=False)
        sessions._opened.append(late)
        assert (await late.join()).session.recording is True
        await asyncio.sleep(RECORD_S)
        stopped_at = time.time()
        result = await admin.stop_recording("room", recording_id)
        stopped = await events.next(Recording)
        assert (stopped.state, stopped.recording_id) == ("stopped", recording_id)
        assert result["state"] == "stopped"
        files = {f["feed_id"]: f for f in result["files"]}
        assert set(files) == {video_feed, audio_feed}
        for entry in files.values():
            assert entry["state"] == "complete"
            (tmp_path / entry["name"]).write_bytes(await admin.download_recording_file(recording_id,
                                                                                       entry["name"]))
        listed = await admin.list_recordings()
        assert [r["recording_id"] for r in listed["recordings"]] == [recording_id]
        with pytest.raises(NotFound):
            await admin.download_recording_file(recording_id, "../sfu.db")

    v, a = files[video_feed], files[audio_feed]
    assert (v["kind"], v["codec"], v["uid"]) == ("video", "video/VP8", "alice")
    assert (a["kind"], a["codec"]) == ("audio", "audio/opus")
    vprobe = await probe(tmp_path / v["name"])
    aprobe = await probe(tmp_path / a["name"])
    assert (vprobe.codec, aprobe.codec) == ("vp8", "opus")

    # codec copy: the recorded packets are the sent frames, byte for byte, from the first key frame on
    vfirst = first_index(video.clip, read_frames(tmp_path / v["name"], 3))
    afirst = first_index(audio.clip, read_frames(tmp_path / a["name"], 8))
    assert vfirst >= 0 and afirst >= 0, "recorded frames are not the published ones"
    assert video.clip.frames[vfirst].keyframe
    sent_sizes = [len(f.data) for f in video.clip.frames[vfirst : vfirst + len(vprobe.packet_sizes)]]
    assert vprobe.packet_sizes == sent_sizes

    # frame count within 2 % and duration within 0.3 s of what was sent while recording
    video_sent = sum(1 for t in video.sent_at[vfirst:] if t <= stopped_at)
    assert abs(len(vprobe.packet_sizes) - video_sent) <= max(2, 0.02 * video_sent)
    assert v["frames"] == len(vprobe.packet_sizes)
    truth_s = video.sent_at[vfirst + len(vprobe.packet_sizes) - 1] - video.sent_at[vfirst] + 1 / FPS
    assert vprobe.format_duration is not None and abs(vprobe.format_duration - truth_s) <= 0.3
    assert abs(v["duration_ms"] / 1000 - truth_s) <= 0.3
    audio_truth_s = audio.sent_at[afirst + len(aprobe.packet_sizes) - 1] - audio.sent_at[afirst] + 0.02
    assert aprobe.format_duration is not None and abs(aprobe.format_duration - audio_truth_s) <= 0.3

    # start offsets: each file's wall-clock start is when its first frame was sent (loopback: ~ms)
    assert abs(v["started_at"] - video.sent_at[vfirst]) <= 0.05
    assert abs(a["started_at"] - audio.sent_at[afirst]) <= 0.05
    truth_gap_ms = (video.sent_at[vfirst] - audio.sent_at[afirst]) * 1000
    assert abs((v["start_offset_ms"] - a["start_offset_ms"]) - truth_gap_ms) <= 50
    print(f"video: {len(vprobe.packet_sizes)} frames ({video_sent} sent), {vprobe.format_duration:.3f} s "
          f"(truth {truth_s:.3f}), start {v['start_offset_ms']} ms; audio: {len(aprobe.packet_sizes)} "
          f"packets, start {a['start_offset_ms']} ms; A/V gap {v['start_offset_ms'] - a['start_offset_ms']} "
          f"ms (truth {truth_gap_ms:.1f})")


async def test_an_unpublished_feed_is_final_at_once_and_the_manifest_survives_a_restart(
    tmp_path: Path,
) -> None:
    require_ffprobe()
    data = tmp_path / "data"
    async with start_server(data) as running:
        creds = await running.credentials()
        sessions = Sessions(running.url)
        try:
            _video, _audio, video_feed, audio_feed = await _publish(sessions, creds, running)
            async with AdminClient(running.url, creds.admin_token()) as admin:
                recording_id = await admin.start_recording("room", [video_feed])
                await asyncio.sleep(2.5)
                alice = sessions._opened[0]
                local = next(f for f in alice.local_feeds if f.feed_id == video_feed)
                await local.unpublish()

                async def final() -> bool:
                    record = await admin.get_recording(recording_id)
                    return [f["state"] for f in record["files"]] == ["complete"]

                await wait_until(final, timeout_s=10)
                record = await admin.get_recording(recording_id)
                assert [f["feed_id"] for f in record["files"]] == [video_feed]  # audio was not asked for
                assert audio_feed not in {f["feed_id"] for f in record["files"]}
                await admin.stop_recording("room", recording_id)
        finally:
            await sessions.close_all()
    async with start_server(data) as running, AdminClient(running.url, creds.admin_token()) as admin:
        record = await admin.get_recording(recording_id)
        assert record["state"] == "stopped" and len(record["files"]) == 1
        raw = await admin.download_recording_file(recording_id, record["files"][0]["name"])
    path = tmp_path / "after-restart.webm"
    path.write_bytes(raw)
    assert (await probe(path)).codec == "vp8"


async def test_recording_a_session_that_is_not_live_or_a_feed_that_is_not_there_is_refused(
    server: RunningServer, creds: Credentials, sessions: Sessions
) -> None:
    await sessions.connect(token=creds.token("room", "alice"))
    async with AdminClient(server.url, creds.admin_token()) as admin:
        with pytest.raises(NotFound):
            await admin.start_recording("nobody-here")
        with pytest.raises(NotFound):
            await admin.start_recording("room", ["f_000000000000"])
        with pytest.raises(NotFound):
            await admin.get_recording("rec_0000")


async def test_a_muted_stretch_stays_a_gap_in_the_timeline_and_session_end_finalizes_the_files(
    server: RunningServer, creds: Credentials, sessions: Sessions, tmp_path: Path
) -> None:
    require_ffprobe()
    _video, audio, _video_feed, audio_feed = await _publish(sessions, creds, server)
    async with AdminClient(server.url, creds.admin_token()) as admin:
        recording_id = await admin.start_recording("room", [audio_feed])
        await asyncio.sleep(1.5)
        await admin.mute_feed("room", audio_feed, True)
        await asyncio.sleep(2.0)
        await admin.mute_feed("room", audio_feed, False)
        await asyncio.sleep(1.5)
        ended_at = time.time()
        await admin.end_session("room")

        async def stopped() -> bool:
            return bool((await admin.get_recording(recording_id))["state"] == "stopped")

        await wait_until(stopped, timeout_s=10)
        record = await admin.get_recording(recording_id)
        (entry,) = record["files"]
        assert entry["state"] == "complete"
        path = tmp_path / entry["name"]
        path.write_bytes(await admin.download_recording_file(recording_id, entry["name"]))
    found = await probe(path)
    gaps = [b - a for a, b in zip(found.packet_times, found.packet_times[1:], strict=False)]
    assert max(gaps) == pytest.approx(2.0, abs=0.3), "the mute should leave a 2 s gap, not close it"
    first = audio.sent_at[first_index(audio.clip, read_frames(path, 8))]
    assert found.span_s == pytest.approx(ended_at - first, abs=0.3)
