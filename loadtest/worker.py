"""One load worker process: some publishers and some counting subscribers, driven over a pipe.

Publishers replay pre-encoded clips (`client_sdk.encoded`), so they cost no codec time. Each RTP packet a
publisher hands to its DTLS transport gets the tool's send-time header extension (`loadtest.taps`).

Subscribers join and negotiate like any client (ICE, DTLS, `subscribe(feed_id, decode=False)`), then
count, by one of two paths (`WorkerPlan.subscriber_path`):

- `socket` (default): at the UDP socket, from the RTP header SRTP leaves in the clear, before unprotect
  (`loadtest.taps.SocketTap`): about half the load-tool CPU per received packet of the aiortc path
  (docs/benchmarks.md, "Workers"); most of what is left is the event loop's and kernel's receive path.
  Latency comes from the send-time extension (CLOCK_MONOTONIC is one
  clock for all processes), for every subscriber.
- `aiortc`: aiortc unprotects and parses every packet, which reaches `client_sdk`'s raw feed (the SDK's
  own receive path, more CPU per packet than the server spends forwarding it). Latency from a
  fingerprint of the payload (`SendStamps`), for subscribers in the publisher's worker only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any, Final, TypeVar

import client_sdk
from client_sdk.encoded import EncodedAudioTrack, EncodedClip, EncodedVideoTrack
from loadtest.pipe import recv
from loadtest.relay_client import RelayFeed, RelayPeers
from loadtest.stats import SendStamps, StreamStats, rtp_payload
from loadtest.taps import CountedStream, SocketTap, hook_send, install_send_time_extension, subscriber_dtls
from sfu.metrics import process_rss_bytes

CLOSE_TIMEOUT_S: Final = 10.0
PROGRESS_EVERY_S: Final = 2.0
DTX_EVERY: Final = 20  # Opus DTX: one 20 ms packet per 400 ms of silence (RFC 7587 section 3.1.3)
_monotonic_ns = time.monotonic_ns
T = TypeVar("T")
SUBSCRIBER_PATHS: Final = ("socket", "aiortc")


@dataclass(frozen=True, slots=True)
class MediaSpec:
    """What each publisher sends: VP8 at a size and bitrate, a key frame every `keyframe_s`, Opus or none."""

    width: int = 640
    height: int = 360
    fps: int = 30
    bitrate_bps: int = 800_000
    keyframe_s: float = 2.0
    audio: bool = True
    clip_s: float = 10.0
    video: bool = True
    talkers: int = 0  # publishers 0..talkers-1 talk; the others send Opus DTX-like silence (0: all talk)

    def clips(self) -> list[EncodedClip]:
        """Encoded once per parameter set and cached on disk by `loadtest.media`."""
        from loadtest.media import encode_opus, encode_vp8

        clips = []
        if self.video:
            clips.append(
                encode_vp8(self.width, self.height, self.fps, self.clip_s, self.bitrate_bps, self.keyframe_s)
            )
        if self.audio:
            clips.append(encode_opus(self.clip_s))
        return clips


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    index: int
    url: str
    key_id: str
    secret: str
    session: str
    publishers: tuple[int, ...]
    subscribers: tuple[int, ...]
    media: MediaSpec
    connect_concurrency: int = 4
    target: str = "sfu"  # or "aiortc-relay" (loadtest/aiortc_relay.py)
    udp_buffer_bytes: int = 2 * 1024 * 1024  # SO_RCVBUF of every client ICE socket
    connect_muted: bool = False  # publishers mute their feeds until every subscriber is connected
    subscriber_path: str = "socket"  # or "aiortc" (see the module docstring)


@dataclass(frozen=True, slots=True)
class FeedRef:
    feed_id: str
    publisher: int
    kind: str


class WorkerState:
    """Counters of the whole worker; read by `snapshot()` when the parent asks."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.stamps = SendStamps()
        self.fingerprints = True  # SendStamps per sent packet (the aiortc path's latency)
        self.streams: list[StreamStats] = []
        self.counted: list[CountedStream] = []  # the socket path's streams
        self.taps: list[SocketTap] = []
        self.latency_ms: list[float] = []
        self.measuring = False
        self.pub_packets = 0
        self.pub_octets = 0
        self.received_bytes = 0
        self.subscribers_connected = 0
        self.errors: list[str] = []

    def measure_latency(self, on: bool) -> None:
        """The socket path appends its samples straight to `latency_ms` while measuring."""
        self.measuring = on
        for counted in self.counted:
            counted.latency_ms = self.latency_ms if on else None

    def snapshot(self, with_latency: bool) -> dict[str, Any]:
        streams = self.streams
        out: dict[str, Any] = {
            "worker": self.index,
            "pub_packets": self.pub_packets,
            "pub_octets": self.pub_octets,
            "streams": len(streams),
            "streams_live": sum(1 for s in streams if s.received),
            "received": sum(s.received for s in streams),
            "received_bytes": self.received_bytes + sum(c.payload_bytes for c in self.counted),
            "unmatched": sum(t.unmatched for t in self.taps),
            "expected": sum(s.expected for s in streams),
            "lost": sum(s.lost for s in streams),
            "reordered": sum(s.reordered for s in streams),
            "duplicates": sum(s.duplicates for s in streams),
            "jitter_ms": [s.jitter_ms for s in streams if s.received],
            "cpu_s": time.process_time(),
            "rss_bytes": process_rss_bytes(),
            "errors": list(self.errors),
        }
        if with_latency:
            out["latency_ms"], self.latency_ms = self.latency_ms, []
        return out


def hook_publisher(state: WorkerState, publisher: int, transport: Any) -> bool:
    """Counts and stamps every RTP packet the publisher's DTLS transport sends (`taps.hook_send`), and
    with the aiortc path also fingerprints it; False if aiortc moved `_send_rtp`."""
    stamps = state.stamps

    def on_packet(data: bytes, now_ns: int) -> None:
        state.pub_packets += 1
        state.pub_octets += len(data)
        if state.fingerprints:
            stamps.stamp(publisher, rtp_payload(data), now_ns)

    return hook_send(transport, on_packet)


def _clock_of(section: Any, kind: str) -> tuple[int, int]:
    """(primary payload type or -1, its clock rate) of a subscribed m-section."""
    clock = 90000 if kind == "video" else 48000
    if section is not None:
        for pt, mime in section.codecs_by_pt.items():
            if not mime.lower().endswith("/rtx"):
                return pt, section.clock_rate_by_pt.get(pt, clock)
    return -1, clock


async def read_feed(state: WorkerState, raw: client_sdk.RawFeed | RelayFeed, ref: FeedRef) -> None:
    """Counts one raw feed until it ends or the task is cancelled."""
    primary, clock = _clock_of(raw.section, ref.kind)
    stream = StreamStats(clock)
    state.streams.append(stream)
    stamps, publisher = state.stamps, ref.publisher
    async for packet in raw.packets():
        now_ns = _monotonic_ns()
        if primary >= 0 and packet.payload_type != primary:
            continue  # RTX and anything else that is not the feed's media
        stream.on_packet(packet.sequence_number, packet.timestamp, now_ns)
        state.received_bytes += len(packet.payload)
        if state.measuring:
            delay_ns = stamps.latency_ns(publisher, packet.payload, now_ns)
            if delay_ns is not None:
                state.latency_ms.append(delay_ns / 1e6)


class Worker:
    """Owns every session and reader task of the process; `close()` releases them all."""

    def __init__(self, conn: Connection, plan: WorkerPlan) -> None:
        self.conn = conn
        self.plan = plan
        self.state = WorkerState(plan.index)
        self.sessions: list[client_sdk.Session] = []
        self.readers: list[asyncio.Task[None]] = []
        self._gate = asyncio.Semaphore(plan.connect_concurrency)
        self.relay = RelayPeers(plan.url) if plan.target == "aiortc-relay" else None
        self.publishing: list[tuple[client_sdk.Session, list[str]]] = []
        self.socket_path = plan.subscriber_path == "socket" and self.relay is None
        self.state.fingerprints = not self.socket_path
        if plan.target == "sfu":
            install_send_time_extension()

    def token(self, uid: str, grants: dict[str, Any]) -> str:
        plan = self.plan
        return client_sdk.tokens.create_token(plan.key_id, plan.secret, plan.session, uid, grants=grants)

    async def connect(self, uid: str, grants: dict[str, Any]) -> client_sdk.Session:
        session = client_sdk.Session(
            self.plan.url,
            token=self.token(uid, grants),
            auto_subscribe=False,
            reconnect=False,
            request_timeout_s=30.0,
        )
        self.sessions.append(session)
        await session.join()
        return session

    def clips_of(self, index: int, clips: list[EncodedClip]) -> list[EncodedClip]:
        """A silent publisher (index >= talkers) sends one audio packet per 400 ms, as Opus DTX does."""
        talkers = self.plan.media.talkers
        if not talkers or index < talkers:
            return clips
        return [replace(c, frames=c.frames[::DTX_EVERY]) if c.kind == "audio" else c for c in clips]

    async def publish(self, clips: list[EncodedClip]) -> list[FeedRef]:
        async def one(index: int) -> list[FeedRef]:
            clips_now = self.clips_of(index, clips)
            if self.relay is not None:
                async with self._gate:
                    found, sender_transport = await self.relay.publish(f"pub-{index}", clips_now)
                if not hook_publisher(self.state, index, sender_transport):
                    self.state.errors.append(f"pub-{index}: no send hook")
                return [FeedRef(feed_id, index, kind) for feed_id, kind in found]
            async with self._gate:
                session = await self.connect(f"pub-{index}", {"subscribe": False})
                tracks: list[tuple[Any, str | None, str | None]] = [
                    (EncodedAudioTrack(c) if c.kind == "audio" else EncodedVideoTrack(c), None, None)
                    for c in clips_now
                ]
                feeds = await session.publish_many(tracks)
                if self.plan.connect_muted:
                    for feed in feeds:
                        await session.mute(feed.feed_id, True)
                self.publishing.append((session, [f.feed_id for f in feeds]))
            transceiver = feeds[0].transceiver
            if transceiver is None or not hook_publisher(self.state, index, transceiver.sender.transport):
                self.state.errors.append(f"pub-{index}: no send hook, latency not measured")
            return [FeedRef(f.feed_id, index, f.kind) for f in feeds]

        results = await self._gather([one(i) for i in self.plan.publishers])
        return [ref for refs in results if refs for ref in refs]

    async def subscribe(self, feeds: list[FeedRef]) -> int:
        async def one(index: int) -> bool:
            if self.relay is not None:
                async with self._gate:
                    relayed = await self.relay.subscribe([f.feed_id for f in feeds], [f.kind for f in feeds])
                for ref, feed in zip(feeds, relayed, strict=True):
                    task = asyncio.create_task(read_feed(self.state, feed, ref), name=f"read-{index}")
                    self.readers.append(task)
                self.state.subscribers_connected += 1
                return True
            async with self._gate:
                session = await self.connect(f"sub-{index}", {"publish": False})
                # all at once: the server folds subscriptions that arrive together into one offer
                raws = await asyncio.gather(
                    *(session.subscribe(ref.feed_id, decode=False, timeout_s=60.0) for ref in feeds)
                )
                if self.socket_path:
                    self._tap_sockets(session, feeds, raws)
                    self.state.subscribers_connected += 1
                    return True
                for ref, raw in zip(feeds, raws, strict=True):
                    task = asyncio.create_task(read_feed(self.state, raw, ref), name=f"read-{index}")
                    self.readers.append(task)
            self.state.subscribers_connected += 1
            return True

        results = await self._gather([one(i) for i in self.plan.subscribers])
        return sum(1 for ok in results if ok)

    def _tap_sockets(
        self, session: client_sdk.Session, feeds: list[FeedRef], raws: list[client_sdk.RawFeed]
    ) -> None:
        """The socket path: one `SocketTap` per subscriber transport, one counted stream per feed."""
        tap = SocketTap(subscriber_dtls(session))
        for ref, raw in zip(feeds, raws, strict=True):
            if raw.section is None or not raw.section.ssrcs:
                raise RuntimeError(f"feed {ref.feed_id}: the offer announced no SSRC to count by")
            counted = CountedStream(StreamStats(_clock_of(raw.section, ref.kind)[1]))
            if self.state.measuring:
                counted.latency_ms = self.state.latency_ms
            for ssrc in raw.section.ssrcs:
                tap.bind(ssrc, counted)
            self.state.streams.append(counted.stats)
            self.state.counted.append(counted)
        if not tap.install():
            raise RuntimeError("no ICE socket to tap")
        self.state.taps.append(tap)

    async def _gather(self, jobs: Sequence[Awaitable[T]]) -> list[T | None]:
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        results: list[T | None] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                self.state.errors.append(f"{type(outcome).__name__}: {outcome}")
                results.append(None)
            else:
                results.append(outcome)
        return results

    async def close(self) -> None:
        for tap in self.state.taps:
            tap.detach()
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.gather(*(s.close() for s in reversed(self.sessions)), return_exceptions=True)
                if self.relay is not None:
                    await self.relay.close()

    async def serve(self) -> None:
        """The command loop: publish at start, then subscribe / snapshot / stop as the parent asks."""
        clips = self.plan.media.clips()
        feeds = await self.publish(clips) if self.plan.publishers else []
        self.conn.send(("published", [(f.feed_id, f.publisher, f.kind) for f in feeds]))
        handlers: dict[str, Callable[[Any], Awaitable[None]]] = {
            "subscribe": self._on_subscribe,
            "unmute": self._on_unmute,
            "snapshot": self._on_snapshot,
        }
        while True:
            command, arg = await recv(self.conn)
            if command == "stop":
                return
            await handlers[command](arg)

    async def _on_unmute(self, _arg: Any) -> None:
        """`connect_muted`: every subscriber is connected, start forwarding all feeds at once."""
        jobs = [s.mute(feed_id, False) for s, feed_ids in self.publishing for feed_id in feed_ids]
        await self._gather(jobs)
        self.conn.send(("unmuted", len(jobs)))

    async def _on_subscribe(self, feeds: list[tuple[str, int, str]]) -> None:
        """Subscribes this worker's subscribers, telling the parent how many are done every 2 s."""
        refs = [FeedRef(*f) for f in feeds]
        job = asyncio.ensure_future(self.subscribe(refs) if self.plan.subscribers else asyncio.sleep(0, 0))
        while not job.done():
            await asyncio.wait([job], timeout=PROGRESS_EVERY_S)
            if not job.done():
                self.conn.send(("connecting", self.state.subscribers_connected))
        self.conn.send(("subscribed", job.result()))

    async def _on_snapshot(self, phase: str) -> None:
        """`begin` starts collecting latency samples, `end` hands them over, `progress` only counts."""
        if phase == "begin":
            self.state.latency_ms = []
            self.state.measure_latency(True)
        if phase == "end":
            self.state.measure_latency(False)
        snap = self.state.snapshot(with_latency=phase == "end")
        self.conn.send(("snapshot", snap))


def prepare_process(udp_buffer_bytes: int) -> None:
    """Per worker: file descriptors up to the hard limit (a peer is a UDP socket and, against pysfu, a
    WebSocket), bigger receive buffers for the ICE sockets aioice creates, and the STUN parse guard.

    NOTE: aioice 0.13.0 sets SO_RCVBUF on each host socket to `aioice.turn.UDP_SOCKET_BUFFER_SIZE`, read
    at gathering time (Linux caps it at net.core.rmem_max).
    """
    import resource

    import aioice.turn

    from sfu.media import bridge

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard)
            )
    aioice.turn.UDP_SOCKET_BUFFER_SIZE = udp_buffer_bytes
    bridge.install_stun_parse_guard()


def granted_rcvbuf(size_bytes: int) -> int:
    """What the kernel reports for SO_RCVBUF = size_bytes on a UDP socket (Linux: 2 x min(size, rmem_max))."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size_bytes)
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def worker_main(conn: Connection, plan: WorkerPlan) -> None:
    """Process entry point (multiprocessing spawn): uvloop when installed, as the server uses."""
    prepare_process(plan.udp_buffer_bytes)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(_main(conn, plan))


async def _main(conn: Connection, plan: WorkerPlan) -> None:
    worker = Worker(conn, plan)
    try:
        await worker.serve()
    except Exception:
        conn.send(("error", traceback.format_exc(limit=5)))
    finally:
        await worker.close()
        conn.send(("stopped", worker.state.snapshot(with_latency=False)))
