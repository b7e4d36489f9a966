"""Server CPU per forwarded packet: our packet path vs aiortc's decode + MediaRelay + re-encode relay.

    .venv/bin/python -m loadtest.bench_forwarding [--seconds 10] [--subscribers 1,10,50] [--relay 1,10]

The server (this process) measures its own CPU time (`time.process_time`) over a window; the peers (one
pre-encoded VP8 ~1.5 Mbit/s + Opus publisher, N counting subscribers that never decode) run in a
spawned process and report how many RTP packets the subscribers received in the same window.
Everything stays on 127.0.0.1. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import Any

LOOPBACK = ("127.0.0.1",)
FPS = 30


def _encode_sources(seconds: int = 10) -> tuple[list[bytes], list[bytes]]:
    import av
    import numpy as np

    codec: Any = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 640, 360, "yuv420p"
    codec.time_base, codec.framerate = Fraction(1, FPS), Fraction(FPS, 1)
    codec.bit_rate, codec.gop_size = 1_500_000, 2 * FPS
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "kf-max-dist": "60"}
    x = np.arange(640, dtype=np.int32)[None, :, None]
    y = np.arange(360, dtype=np.int32)[:, None, None]
    rng = np.random.default_rng(1)
    video: list[bytes] = []
    for i in range(seconds * FPS):
        noise = rng.integers(0, 40, size=(360, 640, 1))
        planes = [(x + i * 4 + noise) % 256, (y + i * 2 + 0 * x) % 256, ((x ^ y) + i + noise) % 256]
        img = np.concatenate(planes, 2)
        frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        video += [bytes(p) for p in codec.encode(frame)]
    audio_codec: Any = av.CodecContext.create("libopus", "w")
    audio_codec.sample_rate, audio_codec.layout = 48000, "mono"
    audio_codec.format, audio_codec.bit_rate = "s16", 32000
    audio: list[bytes] = []
    t = np.arange(960)
    for i in range(50):
        tone = (np.sin(2 * np.pi * 440 * (t + i * 960) / 48000) * 8000).astype(np.int16).reshape(1, -1)
        aframe = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        aframe.sample_rate, aframe.pts = 48000, i * 960
        audio += [bytes(p) for p in audio_codec.encode(aframe)]
    return video, audio


def _packet_track(kind: str, packets: list[bytes], go: asyncio.Event) -> Any:
    import av
    from aiortc.mediastreams import MediaStreamTrack

    class Track(MediaStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self.kind = kind
            self.sent = 0
            self.start = 0.0

        async def recv(self) -> Any:
            await go.wait()
            clock, step, interval = (90000, 3000, 1 / FPS) if kind == "video" else (48000, 960, 0.02)
            if not self.start:
                self.start = time.monotonic()
            delay = self.start + self.sent * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            packet = av.Packet(packets[self.sent % len(packets)])
            packet.pts, packet.time_base = self.sent * step, Fraction(1, clock)
            self.sent += 1
            return packet

    return Track()


def peers_main(conn: Connection, subscribers: int) -> None:
    """The peers process: a publisher and `subscribers` counting subscribers, driven over `conn`."""
    asyncio.run(_peers(conn, subscribers))


async def _peers(conn: Connection, subscribers: int) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from sfu.media import bridge

    async def recv() -> Any:
        return await asyncio.to_thread(conn.recv)

    video, audio = _encode_sources()
    go = asyncio.Event()
    received = [0]

    def count(data: bytes, *args: object, **kwargs: object) -> Any:
        received[0] += 1
        return bridge.DONE

    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind, packets in (("video", video), ("audio", audio)):
        publisher.addTransceiver(_packet_track(kind, packets, go), direction="sendonly")
    with bridge.ice_hosts_scope(LOOPBACK):
        await publisher.setLocalDescription(await publisher.createOffer())
    conn.send(("offer", publisher.localDescription.sdp))
    pcs = [publisher]
    while True:
        message = await recv()
        if message[0] == "answer":
            await publisher.setRemoteDescription(RTCSessionDescription(sdp=message[1], type="answer"))
        elif message[0] == "sub_offer":
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pcs.append(pc)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=message[1], type="offer"))
            bridge.disable_aiortc_media(pc)  # count packets, never decode: the peers must keep up
            with bridge.ice_hosts_scope(LOOPBACK):
                await pc.setLocalDescription(await pc.createAnswer())
            for dtls in bridge.dtls_transports(pc):
                bridge.hook_dtls(dtls, count, count)
            conn.send(("sub_answer", pc.localDescription.sdp))
        elif message[0] == "go":
            go.set()
        elif message[0] == "count":
            conn.send(("count", received[0]))
        elif message[0] == "stop":
            break
    for pc in pcs:
        await pc.close()
    conn.send(("stopped",))


async def _wait_for(predicate: Callable[[], bool], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("peers did not connect")
        await asyncio.sleep(0.05)


async def _server_sfu(conn: Connection, subscribers: int) -> list[Any]:
    from sfu.media.engine import MediaEngine

    engine = MediaEngine(LOOPBACK)
    pub = engine.create_publisher()
    offer = (await asyncio.to_thread(conn.recv))[1]
    answer, tracks = await pub.negotiate(offer)
    conn.send(("answer", answer))
    subs = []
    for _ in range(subscribers):
        sub = engine.create_subscriber()
        for track in tracks:
            sub.add(track.receiver, tag=track.mid)
        sdp, _tags = await sub.create_offer()
        conn.send(("sub_offer", sdp))
        await sub.set_answer((await asyncio.to_thread(conn.recv))[1])
        subs.append(sub)
    await _wait_for(lambda: all(s.sink.connected for s in subs) and pub.sink.connected)
    return [engine]


async def _server_relay(conn: Connection, subscribers: int) -> list[Any]:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaRelay

    from sfu.media import bridge

    relay = MediaRelay()
    pub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracks: list[Any] = []
    pub.on("track", tracks.append)
    offer = (await asyncio.to_thread(conn.recv))[1]
    await pub.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    with bridge.ice_hosts_scope(LOOPBACK):
        await pub.setLocalDescription(await pub.createAnswer())
    conn.send(("answer", pub.localDescription.sdp))
    pcs = [pub]
    for _ in range(subscribers):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        for track in tracks:
            pc.addTrack(relay.subscribe(track))
        with bridge.ice_hosts_scope(LOOPBACK):
            await pc.setLocalDescription(await pc.createOffer())
        conn.send(("sub_offer", pc.localDescription.sdp))
        answer = (await asyncio.to_thread(conn.recv))[1]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        pcs.append(pc)
    await _wait_for(lambda: all(pc.connectionState == "connected" for pc in pcs))
    return pcs


async def run(mode: str, subscribers: int, seconds: float) -> tuple[float, int]:
    """(server CPU us per packet received by the subscribers, packets) for one configuration."""
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    peers = ctx.Process(target=peers_main, args=(child_conn, subscribers), daemon=True)
    peers.start()
    owned = await (_server_sfu(conn, subscribers) if mode == "sfu" else _server_relay(conn, subscribers))
    conn.send(("go",))
    await asyncio.sleep(2.0)  # warm-up: key frames, decoder/encoder start-up in relay mode

    async def received() -> int:
        conn.send(("count",))
        reply = await asyncio.to_thread(conn.recv)
        return int(reply[1])

    packets0, cpu0 = await received(), time.process_time()
    await asyncio.sleep(seconds)
    cpu1, packets1 = time.process_time(), await received()
    conn.send(("stop",))
    await asyncio.to_thread(conn.recv)
    for thing in owned:
        await thing.close()
    peers.join(10)
    packets = packets1 - packets0
    return (cpu1 - cpu0) * 1e6 / max(packets, 1), packets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--subscribers", default="1,10,50")
    parser.add_argument("--relay", default="1,10", help="subscriber counts for the aiortc relay ('' = skip)")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args(argv)
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    rows = [("sfu", int(n)) for n in args.subscribers.split(",") if n]
    rows += [("aiortc relay", int(n)) for n in args.relay.split(",") if n]
    command = [os.path.basename(sys.executable), "-m", "loadtest.bench_forwarding", *sys.argv[1:]]
    print(f"command: {' '.join(command)}")
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"loop: {loop}, window {args.seconds:.0f} s, cores {os.cpu_count()}\n")
    print("| server | subscribers | packets forwarded/s | server CPU % | us per forwarded packet |")
    print("|---|---|---|---|---|")
    for mode, n in rows:
        us, packets = asyncio.run(run("sfu" if mode == "sfu" else "relay", n, args.seconds))
        rate = packets / args.seconds
        print(f"| {mode} | {n} | {rate:.0f} | {us * rate / 1e4:.0f} | {us:.1f} |", flush=True)


if __name__ == "__main__":
    main()
