"""The examples' working parts against the real server (media: needs the server's media glue)."""

from __future__ import annotations

from pathlib import Path

import av
from aiortc import AudioStreamTrack

from client_sdk import FeedPublished, Message
from client_sdk.examples.chat_bot import reply_to
from client_sdk.examples.record_session import record_feed
from tests.integration.sdk.conftest import Sessions
from tests.integration.sdk.test_media import ColorBars
from tests.support import Credentials, RunningServer


async def test_the_recorder_writes_playable_files_without_re_encoding(
    media_server: RunningServer, sessions: Sessions, creds: Credentials, tmp_path: Path
) -> None:
    recorder = await sessions.connect(
        token=creds.token("room", "rec", grants={"hidden": True}), auto_subscribe=False
    )
    events = recorder.events()
    alice = await sessions.connect(token=creds.token("room", "alice"))
    video, audio = await alice.publish_many([(ColorBars(), None, None), (AudioStreamTrack(), None, None)])
    await events.next(FeedPublished)
    await events.next(FeedPublished)
    raw_video = await recorder.subscribe(video.feed_id, decode=False)
    raw_audio = await recorder.subscribe(audio.feed_id, decode=False)
    video_writer = await record_feed(raw_video, tmp_path, max_frames=10)
    audio_writer = await record_feed(raw_audio, tmp_path, max_frames=10)
    with av.open(str(video_writer.path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 10 and (frames[0].width, frames[0].height) == (320, 240)
    with av.open(str(audio_writer.path)) as container:
        assert container.streams.audio[0].codec_context.name == "opus"
        assert sum(1 for packet in container.demux(audio=0) if packet.size) == 10


def test_the_chat_bot_answers_with_the_text_it_got() -> None:
    assert reply_to({"text": "hi"}) == {"text": "you said: HI"}
    assert isinstance(Message("a", "chat", 1, 0, "x"), Message)
