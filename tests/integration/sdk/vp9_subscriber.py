"""SDK side of tests/integration/sdk/test_vp9.py, run in its own process so that only client_sdk (never the
server package) registers codecs in aiortc's table: `python -m tests.integration.sdk.vp9_subscriber`.

argv: url, vp9 feed id, and three tokens (a VP8 publisher, a decoding subscriber, a raw subscriber).
Prints one JSON line with what it received.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import av
import numpy as np
import orjson
from aiortc import VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

import client_sdk

FRAMES = 30
WAIT_S = 20.0


class Bars(VideoStreamTrack):
    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.zeros((120, 160, 3), dtype=np.uint8)
        image[:, :80] = (0, 0, 255)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


async def frames_of(feed: client_sdk.RemoteFeed, count: int) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    async with asyncio.timeout(WAIT_S):
        while len(out) < count:
            frame = await feed.track.recv()
            assert isinstance(frame, av.VideoFrame) and frame.pts is not None
            out.append((frame.width, frame.height, frame.pts))
    return out


async def main(url: str, vp9_feed: str, publisher: str, decoder: str, raw: str) -> dict[str, Any]:
    sessions = [client_sdk.Session(url, token=t, auto_subscribe=False) for t in (publisher, decoder, raw)]
    pub, dec, rawsub = sessions
    try:
        for session in sessions:
            await session.join()
        vp8 = await pub.publish(Bars(), source="camera")
        decoded_vp8 = await dec.subscribe(vp8.feed_id)
        decoded_vp9 = await dec.subscribe(vp9_feed)  # an offer with a VP8 and a VP9 m-section
        raw_vp9 = await rawsub.subscribe(vp9_feed, decode=False)
        vp9_frames, vp8_frames = await asyncio.gather(
            frames_of(decoded_vp9, FRAMES), frames_of(decoded_vp8, 5)
        )
        packets = []
        async with asyncio.timeout(WAIT_S):
            async for packet in raw_vp9.packets():
                packets.append(packet)
                if len(packets) == 50:
                    break
        track: Any = decoded_vp9.track
        result = {
            "vp9_frames": vp9_frames,
            "vp8_frames": vp8_frames,
            "vp9_track": type(track).__name__,
            "vp9_decode_errors": track.decode_errors,
            "raw_codec": raw_vp9.codec,
            "raw_payload_types": sorted({p.payload_type for p in packets}),
            "raw_codecs_by_pt": {str(k): v for k, v in raw_vp9.section.codecs_by_pt.items()}
            if raw_vp9.section
            else {},
            "sfu_imported": any(m == "sfu" or m.startswith("sfu.") for m in sys.modules),
        }
        await dec.unsubscribe(vp9_feed)
        ended = False
        try:
            async with asyncio.timeout(5):
                while True:
                    await track.recv()
        except MediaStreamError:  # the track ended with the subscription
            ended = True
        result["vp9_ended_on_unsubscribe"] = ended
        return result
    finally:
        for session in sessions:
            await session.close()


if __name__ == "__main__":
    print(orjson.dumps(asyncio.run(main(*sys.argv[1:6]))).decode(), flush=True)
