"""A subscriber process for tests that run it inside a test host's network namespace.

`python -m tests.integration.system.netns_subscriber URL TOKEN FEED_ID SECONDS` subscribes to one video
feed, decodes it for SECONDS after the first frame, and prints one JSON line: frames decoded and sizes.
"""

from __future__ import annotations

import asyncio
import sys
import time

import av
import orjson

import client_sdk


async def run(url: str, token: str, feed_id: str, seconds: float) -> dict[str, object]:
    async with await client_sdk.connect(url, token=token, auto_subscribe=False) as session:
        remote = await session.subscribe(feed_id)
        frame = await asyncio.wait_for(remote.track.recv(), 20)
        assert isinstance(frame, av.VideoFrame)
        frames, sizes = 1, {(frame.width, frame.height)}
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = await asyncio.wait_for(remote.track.recv(), left)
            except TimeoutError:
                break
            assert isinstance(frame, av.VideoFrame)
            frames += 1
            sizes.add((frame.width, frame.height))
        return {"frames": frames, "sizes": sorted(sizes)}


if __name__ == "__main__":
    url, token, feed_id, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    sys.stdout.write(orjson.dumps(asyncio.run(run(url, token, feed_id, seconds))).decode() + "\n")
