"""sfu/recording/job.py: a hidden participant records what it receives, as a codec copy."""

from __future__ import annotations

import asyncio
from pathlib import Path

from client_sdk import FeedPublished
from client_sdk.encoded import EncodedAudioTrack, EncodedVideoTrack
from loadtest.media import encode_opus, encode_vp8
from sfu.recording.job import record_feed
from tests.integration.recording.probe import first_index, probe, read_frames, require_ffprobe
from tests.integration.sdk.conftest import Sessions
from tests.support import Credentials, RunningServer


async def test_the_record_job_writes_each_feed_it_receives_without_re_encoding(
    server: RunningServer, creds: Credentials, tmp_path: Path
) -> None:
    require_ffprobe()
    sessions = Sessions(server.url)
    try:
        job_token = creds.token("room", "job", grants={"hidden": True, "publish": False})
        job = await sessions.connect(token=job_token, auto_subscribe=False)
        events = job.events()
        alice = await sessions.connect(token=creds.token("room", "alice"))
        video_clip = encode_vp8(320, 240, fps=30, seconds=20, bitrate_bps=300_000, keyframe_interval_s=1)
        feeds = await alice.publish_many([
            (EncodedVideoTrack(video_clip, loop=False), "camera", None),
            (EncodedAudioTrack(encode_opus(seconds=20), loop=False), "microphone", None),
        ])
        for _ in feeds:
            await events.next(FeedPublished)
        raws = [await job.subscribe(f.feed_id or "", decode=False) for f in feeds]
        tasks = [asyncio.create_task(record_feed(raw, tmp_path)) for raw in raws]
        await asyncio.sleep(4)
        for feed in feeds:
            await feed.unpublish()
        stats = await asyncio.wait_for(asyncio.gather(*tasks), 15)
    finally:
        await sessions.close_all()
    video, audio = stats
    assert video.frames > 60 and audio.frames > 150
    assert (await probe(tmp_path / video.name)).codec == "vp8"
    assert (await probe(tmp_path / audio.name)).codec == "opus"
    assert first_index(video_clip, read_frames(tmp_path / video.name, 3)) >= 0
