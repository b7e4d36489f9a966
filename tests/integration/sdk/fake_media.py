"""Just enough of PROTOCOL.md, on aiortc, to exercise the SDK's media code before the real server has media.

The "server" decodes what is published and re-encodes it for subscribers (aiortc `MediaRelay`): a test
rig, not an SFU. It checks the SDK's side: offers and answers on both transports, mid -> feed mapping,
loopback ICE, decoded tracks and the raw RTP tap.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from client_sdk.ice import close_peer_connection, gather_on


class FakeMediaServer:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.tracks_by_feed: dict[str, MediaStreamTrack] = {}
        self.pcs: list[RTCPeerConnection] = []
        self.url = ""

    def _pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)
        return pc

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        state: dict[str, Any] = {"uid": "", "pub": None, "sub": None, "negotiation": 0}

        async def send(body: dict[str, Any]) -> None:
            await ws.send_str(json.dumps(body))

        async for message in ws:
            frame = json.loads(message.data)
            kind, rid = frame["type"], frame.get("id")
            if kind == "join":
                state["uid"] = frame.get("uid", "u")
                await send(
                    {
                        "type": "joined",
                        "re": rid,
                        "session": {"sid": "s", "cid": "c", "recording": False},
                        "participant": {"uid": state["uid"]},
                        "participants": [],
                        "ice_servers": [],
                        "resume": "r",
                        "history": {},
                    }
                )
            elif kind == "publish":
                await send(await self._publish(state, frame))
            elif kind == "subscribe":
                await send({"type": "subscribed", "re": rid, "feed_ids": frame["feed_ids"]})
                await self._offer(state, frame["feed_ids"], send)
            elif kind == "answer":
                await state["sub"].setRemoteDescription(RTCSessionDescription(frame["sdp"], "answer"))
            elif kind == "ping":
                await send({"type": "pong", "re": rid})
            elif kind in ("unsubscribe", "unpublish"):
                await send({"type": kind + "d", "re": rid})
            elif kind == "leave":
                break
        return ws

    async def _publish(self, state: dict[str, Any], frame: dict[str, Any]) -> dict[str, Any]:
        pc = state["pub"] = state["pub"] or self._pc()
        await pc.setRemoteDescription(RTCSessionDescription(frame["sdp"], "offer"))
        feeds = []
        for transceiver in pc.getTransceivers():
            if transceiver.mid in {f["mid"] for f in frame["feeds"]}:
                feed_id = f"f_{state['uid']}_{transceiver.mid}"
                self.tracks_by_feed[feed_id] = transceiver.receiver.track
                feeds.append({"mid": transceiver.mid, "feed_id": feed_id})
        answer = await pc.createAnswer()
        with gather_on(("127.0.0.1",)):
            await pc.setLocalDescription(answer)
        return {"type": "published", "re": frame["id"], "sdp": pc.localDescription.sdp, "feeds": feeds}

    async def _offer(self, state: dict[str, Any], feed_ids: list[str], send: Any) -> None:
        pc = state["sub"] = state["sub"] or self._pc()
        added = {}
        for feed_id in feed_ids:
            sender = pc.addTrack(self.relay.subscribe(self.tracks_by_feed[feed_id]))
            added[sender] = feed_id
        offer = await pc.createOffer()
        with gather_on(("127.0.0.1",)):
            await pc.setLocalDescription(offer)
        mids = {t.mid: added[t.sender] for t in pc.getTransceivers() if t.sender in added}
        state["negotiation"] += 1
        await send(
            {
                "type": "offer",
                "sdp": pc.localDescription.sdp,
                "negotiation": state["negotiation"],
                "feeds": mids,
            }
        )

    async def close(self) -> None:
        for pc in self.pcs:
            await close_peer_connection(pc)


@asynccontextmanager
async def fake_media_server() -> AsyncIterator[FakeMediaServer]:
    fake = FakeMediaServer()
    app = web.Application()
    app.router.add_get("/v1/rtc", fake.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        await fake.close()
        await runner.cleanup()
