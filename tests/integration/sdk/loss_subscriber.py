"""An SDK subscriber process for test_loss_repair.py, run inside a test host's network namespace.

`python -m tests.integration.sdk.loss_subscriber URL TOKEN FEED_ID SECONDS REPAIR` subscribes to one
video feed with `Session(repair=REPAIR == "1")`, decodes it for SECONDS after its first frame, and prints
one JSON line: per decoded frame its CLOCK_MONOTONIC time (shared by every namespace) and its media time
in 90 kHz ticks from the first frame, and what the SDK's repair did.
"""

from __future__ import annotations

import asyncio
import sys
import time

import av
import orjson

import client_sdk


async def run(url: str, token: str, feed_id: str, seconds: float, repair: bool) -> dict[str, object]:
    session = client_sdk.Session(url, token=token, auto_subscribe=False, repair=repair)
    async with session:
        remote = await session.subscribe(feed_id)
        frame = await asyncio.wait_for(remote.track.recv(), 20)
        assert isinstance(frame, av.VideoFrame) and frame.pts is not None
        first = frame.pts
        times, stamps = [time.monotonic()], [0]
        deadline = times[0] + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = await asyncio.wait_for(remote.track.recv(), left)
            except TimeoutError:
                break
            assert isinstance(frame, av.VideoFrame) and frame.pts is not None
            times.append(time.monotonic())
            stamps.append(frame.pts - first)
        stats = session._subscriber.repair_stats() if session._subscriber is not None else None
        return {"times": times, "stamps": stamps, "repair": stats}


if __name__ == "__main__":
    url, token, feed_id, seconds, repair = sys.argv[1:6]
    result = asyncio.run(run(url, token, feed_id, float(seconds), repair == "1"))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
