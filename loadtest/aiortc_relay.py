"""The comparison baseline: what a Python user would otherwise write, aiortc's server example + `MediaRelay`.

Each published track is received (aiortc decodes it) and each subscriber peer gets
`MediaRelay().subscribe(track)` (aiortc encodes once per subscriber). Signalling is one HTTP POST per peer,
non-trickle, loopback only, no STUN/TURN (`iceServers=[]`); it is a load-test target, not a product.

    python -m loadtest.aiortc_relay --port 0      # prints "listening on http://127.0.0.1:PORT"

POST /publish   {"sdp": offer, "name": "pub-0"}  -> {"sdp": answer, "feeds": [[feed_id, kind], ...]}
POST /subscribe {"sdp": offer, "feeds": [feed_id, ...]} -> {"sdp": answer}; the offer's recvonly
                m-sections are matched to `feeds` in order
GET  /metrics   prometheus_client's process collector (process_cpu_seconds_total, ..._resident_memory_bytes)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from prometheus_client import REGISTRY, generate_latest

from client_sdk.ice import gather_on

log = logging.getLogger("loadtest.aiortc_relay")
HOST = "127.0.0.1"


class Relay:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.tracks_by_feed: dict[str, Any] = {}
        self.peers: set[RTCPeerConnection] = set()

    def _peer(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.peers.add(pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.peers.discard(pc)
                await pc.close()

        return pc

    async def _answer(self, pc: RTCPeerConnection) -> str:
        with gather_on([HOST]):
            await pc.setLocalDescription(await pc.createAnswer())
        sdp: str = pc.localDescription.sdp
        return sdp

    async def publish(self, request: web.Request) -> web.Response:
        body = await request.json()
        pc = self._peer()
        feeds: list[list[str]] = []

        @pc.on("track")
        def on_track(track: Any) -> None:
            feed_id = f"{body['name']}-{track.kind}-{len(feeds)}"
            self.tracks_by_feed[feed_id] = track
            feeds.append([feed_id, track.kind])

        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        sdp = await self._answer(pc)
        return web.json_response({"sdp": sdp, "feeds": feeds})

    async def subscribe(self, request: web.Request) -> web.Response:
        body = await request.json()
        pc = self._peer()
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        for transceiver, feed_id in zip(pc.getTransceivers(), body["feeds"], strict=False):
            track = self.tracks_by_feed.get(feed_id)
            if track is None:
                raise web.HTTPNotFound(text=f"no feed {feed_id}")
            transceiver.sender.replaceTrack(self.relay.subscribe(track))
            transceiver.direction = "sendonly"
        sdp = await self._answer(pc)
        return web.json_response({"sdp": sdp})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), content_type="text/plain")

    async def close(self, app: web.Application) -> None:
        peers, self.peers = list(self.peers), set()
        for pc in peers:
            with contextlib.suppress(Exception):
                await pc.close()


def build_app() -> web.Application:
    relay = Relay()
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/publish", relay.publish)
    app.router.add_post("/subscribe", relay.subscribe)
    app.router.add_get("/metrics", relay.metrics)
    app.on_shutdown.append(relay.close)
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(build_app())
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    print(f"aiortc relay listening on http://{HOST}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.aiortc_relay", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
