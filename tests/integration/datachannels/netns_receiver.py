"""A data receiver process for tests that run it inside a test host's network namespace.

`python -m tests.integration.datachannels.netns_receiver URL TOKEN TIMEOUT_S` joins, collects
DataReceived events until a reliable message with topic "end" (its payload: the count sent before it)
or TIMEOUT_S, and prints one JSON line: how many reliable messages came, whether they were intact, in
order, complete (no gap), and how many `data_reset` notices came.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import orjson

import client_sdk
from client_sdk import DataReceived, DataReset
from tests.integration.datachannels.support import verify


async def run(url: str, token: str, timeout_s: float) -> dict[str, object]:
    seqs: list[int] = []
    intact = True
    expected = -1
    resets = 0
    async with await client_sdk.connect(url, token=token, auto_subscribe=False) as session:
        print("joined", flush=True)  # the parent waits for this line
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                async for event in session.events():
                    if isinstance(event, DataReset) and event.reliable and event.dropped > 0:
                        resets += 1
                    if not isinstance(event, DataReceived) or not event.reliable:
                        continue
                    if event.topic == "end":
                        expected = int(event.payload)
                        break
                    try:
                        seqs.append(verify(event.payload))
                    except AssertionError:
                        intact = False
    return {"received": len(seqs), "expected": expected, "intact": intact,
            "in_order": seqs == sorted(seqs) and len(set(seqs)) == len(seqs),
            "complete": seqs == list(range(len(seqs))), "resets": resets}


if __name__ == "__main__":
    url, token, timeout_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    sys.stdout.write(orjson.dumps(asyncio.run(run(url, token, timeout_s))).decode() + "\n")
