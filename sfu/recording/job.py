"""A recording job outside the server process: a hidden participant writes every feed of a session to files.

It joins with `grants.hidden` (nobody sees it) and no publish right, subscribes to each feed with
`decode=False` and turns the RTP it receives into files with the server's own recording pieces: the
depacketizer (`sfu.recording.depacketize`: reorder, reassemble, drop until a key frame after loss) and the
codec-copy muxer (`sfu.recording.mux`: WebM for VP8/VP9/Opus, Matroska for H.264, crash-safe clusters).
Nothing is decoded or re-encoded. Disk writes run on one thread per feed, never on the event loop.

Use it where the server's own recordings (`POST /v1/sessions/{sid}/recordings`) do not fit, e.g. to record
on another machine:

    python -m sfu.recording.job --key-id k_.. --secret sk_.. --session demo --out rec/

The SDK's example `client_sdk/examples/record_session.py` is the same job with only the SDK (aiortc's
depayloaders; a gap drops the frame, no reorder window, no VP9), since the SDK never imports the server
package (tests/unit/client_sdk/test_independence.py). This one needs the server package installed and
writes exactly what a server recording would. The server itself never imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import client_sdk
from client_sdk.tokens import create_token
from sfu.recording.depacketize import Depacketizer, Frame
from sfu.recording.mux import FeedFile, FileStats, can_record, file_extension

log = logging.getLogger("sfu.recording.job")


def _write(writer: FeedFile, frames: list[Frame]) -> None:
    for frame in frames:
        writer.write(frame)


async def record_feed(raw: client_sdk.RawFeed, out_dir: Path) -> FileStats:
    """Writes `raw` to `<out_dir>/<feed_id>.<webm|mkv>` until the feed ends; returns the file's stats."""
    section = raw.section
    codec = raw.codec
    if section is None or codec is None or not can_record(codec):
        raise ValueError(f"feed {raw.feed_id}: cannot record {codec}")
    payload_type = next(iter(section.codecs_by_pt))
    clock_rate = section.clock_rate_by_pt[payload_type]
    kind = "audio" if codec.lower().startswith("audio/") else "video"
    path = out_dir / f"{raw.feed_id}.{file_extension(codec)}"
    stats = FileStats(path.name, codec, kind, clock_rate)
    depacketizer = Depacketizer(codec)
    writer = FeedFile(path, codec, kind, clock_rate, stats)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"record-{raw.feed_id}") as disk:
        try:
            await raw.request_key_frame()
            async for packet in raw.packets():
                if packet.payload_type != payload_type:
                    continue  # RTX or another codec: a codec copy keeps to one
                frames = depacketizer.push_payload(packet.sequence_number, packet.timestamp,
                                                   bool(packet.marker), packet.payload)
                if frames:
                    await loop.run_in_executor(disk, _write, writer, frames)
        finally:
            await loop.run_in_executor(disk, _write, writer, depacketizer.flush())
            await loop.run_in_executor(disk, writer.close)
    log.info("%s: %d frames, %d ms in %s", raw.feed_id, stats.frames, stats.duration_ms, path)
    return stats


def _parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="python -m sfu.recording.job", description=__doc__)
    cli.add_argument("--url", default="http://127.0.0.1:7880", help="server base URL")
    cli.add_argument("--key-id", required=True, help="a secret key's id (k_...)")
    cli.add_argument("--secret", required=True, help="that key's secret (sk_...)")
    cli.add_argument("--session", default="demo", help="session name to record")
    cli.add_argument("--uid", default="record-job", help="this (hidden) participant's uid")
    cli.add_argument("--out", type=Path, default=Path("recordings"), help="directory for the files")
    return cli


async def main() -> None:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    jwt = create_token(args.key_id, args.secret, args.session, args.uid, name="Recorder",
                       grants={"hidden": True, "publish": False})
    tasks: set[asyncio.Task[FileStats]] = set()

    async def start(session: client_sdk.Session, feed_id: str) -> None:
        raw = await session.subscribe(feed_id, decode=False)
        tasks.add(asyncio.create_task(record_feed(raw, args.out), name=f"record-{feed_id}"))

    async with await client_sdk.connect(args.url, token=jwt, auto_subscribe=False) as session:
        for feed_id in list(session.feeds_by_id):
            await start(session, feed_id)
        async for event in session.events():
            if isinstance(event, client_sdk.FeedPublished):
                await start(session, event.feed.feed_id)
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
