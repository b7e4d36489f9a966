"""`sfu serve --workers 2 --max-worker-cpu`: every worker at the limit refuses new sessions `unavailable`,
while a session that already lives on a worker keeps accepting joins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.integration.cluster.test_workers import admin_headers, workers
from tests.integration.deploy.serve import Served, serve
from tests.support import wait_until

TINY_CPU_PERCENT = "0.001"
"""10 us of CPU per second: any worker that has done anything since the last poll is at the limit."""


async def join(http: aiohttp.ClientSession, url: str, served: Served, sid: str,
               uid: str) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await http.ws_connect(url)
    await ws.send_str(orjson.dumps({"type": "join", "id": 1, "token": served.token(sid, uid)}).decode())
    reply: dict[str, Any] = orjson.loads(await ws.receive_str(timeout=10))
    return ws, reply


async def test_full_workers_refuse_a_new_session_and_keep_an_existing_one(tmp_path: Path) -> None:
    async with (serve(tmp_path / "data", "--workers", "2", "--max-worker-cpu", TINY_CPU_PERCENT) as served,
                aiohttp.ClientSession() as http):
        listed = await workers(http, served)

        async def all_reported_busy() -> bool:
            nonlocal listed
            listed = await workers(http, served)
            return all(w["alive"] and w["cpu"] >= 0.00001 for w in listed)

        await wait_until(all_reported_busy, 15)
        # a session already on worker 0 (joined there directly), as if created before the load came
        direct = f"ws://127.0.0.1:{listed[0]['port']}/v1/rtc"
        ann, joined = await join(http, direct, served, "meeting", "ann")
        assert joined["type"] == "joined", joined

        async def meeting_reported() -> bool:
            return any("meeting" in w["sessions"] for w in await workers(http, served))

        await wait_until(meeting_reported, 15)
        bob, joined = await join(http, served.ws_url, served, "meeting", "bob")
        assert joined["type"] == "joined", joined
        assert {p["uid"] for p in joined["participants"]} == {"ann"}

        carol, refused = await join(http, served.ws_url, served, "new-meeting", "carol")
        await expect_unavailable(carol, refused)
        assert not any("new-meeting" in w["sessions"] for w in await workers(http, served))

        async with http.get(f"{served.url}/v1/sessions/meeting", headers=admin_headers(served)) as response:
            assert response.status == 200
            uids = {p["uid"] for p in (await response.json())["participants"]}
        assert uids == {"ann", "bob"}
        for ws in (ann, bob):
            await ws.close()


async def expect_unavailable(ws: aiohttp.ClientWebSocketResponse, reply: dict[str, Any]) -> None:
    """A join refused because the server is at capacity: `error unavailable`, `closed`, close 1013."""
    assert reply == {"type": "error", "re": 1, "code": "unavailable",
                     "message": "server at capacity, try again later"}  # fmt: skip
    closed = orjson.loads(await ws.receive_str(timeout=10))
    assert closed == {"type": "closed", "reason": "unavailable"}
    await ws.receive(timeout=10)
    assert ws.close_code == 1013
