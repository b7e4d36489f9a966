"""One load worker process: some publishers and some counting subscribers, driven over a pipe.

Publishers replay pre-encoded clips, so they cost no codec time, by one of two paths
(`WorkerPlan.publisher_path`): `raw` (default) sends pre-packetized RTP from one pacer per process
(`loadtest.raw_publisher`; 16 publishers in one process cost 0.46 % of a core each, against ~3.6 %
for one through aiortc's sender); `aiortc` hands `client_sdk.encoded` tracks to aiortc's sender.
Either way every RTP packet carries the tool's send-time header extension (`loadtest.taps`).

Subscribers join and negotiate like any client (ICE, DTLS, `subscribe(feed_id, decode=False)`), then
count, by one of three paths (`WorkerPlan.subscriber_path`):

- `socket` (default): at the UDP socket, from the RTP header SRTP leaves in the clear, before unprotect
  (`loadtest.taps.SocketTap`): about half the load-tool CPU per received packet of the aiortc path
  (docs/benchmarks.md, "Workers"); most of what is left is the event loop's and kernel's receive path.
  Latency comes from the send-time extension (CLOCK_MONOTONIC is one
  clock for all processes), for every subscriber.
- `kernel`: not at all in Python: the subscribers gather on a loopback address of their own and an
  nftables rule counts and drops their media before any socket (`loadtest.kernel_sink`), so a
  subscriber costs ~nothing per packet; loss is packets sent x subscribers vs packets counted, no
  latency. For measuring the server's capacity on the machine it runs on (needs root and `nft`).
- `aiortc`: aiortc unprotects and parses every packet, which reaches `client_sdk`'s raw feed (the SDK's
  own receive path, more CPU per packet than the server spends forwarding it). Latency from a
  fingerprint of the payload (`SendStamps`), for subscribers in the publisher's worker only.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import os
import random
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any, Final, TypeVar

import client_sdk
from client_sdk.encoded import EncodedAudioTrack, EncodedClip, EncodedVideoTrack
from loadtest.kernel_sink import KernelSink
from loadtest.pipe import recv
from loadtest.raw_publisher import RawPacer, held_track, packetize
from loadtest.relay_client import RelayFeed, RelayPeers
from loadtest.stats import SendStamps, StreamStats, rtp_payload
from loadtest.taps import (
    CountedStream,
    RawSendPath,
    SocketTap,
    answer_consent_fast,
    hook_send,
    install_send_time_extension,
    local_ports,
    quiet_consent,
    raw_send_path,
    silence_receivers,
    silence_sender_rtcp,
    subscriber_dtls,
)
from sfu import gc_tuning
from sfu.metrics import process_rss_bytes

CLOSE_TIMEOUT_S: Final = 10.0
PROGRESS_EVERY_S: Final = 2.0
DTX_EVERY: Final = 20  # Opus DTX: one 20 ms packet per 400 ms of silence (RFC 7587 section 3.1.3)
_monotonic_ns = time.monotonic_ns
T = TypeVar("T")
SUBSCRIBER_PATHS: Final = ("socket", "kernel", "aiortc")
PUBLISHER_PATHS: Final = ("raw", "aiortc")
SEND_PATH_TIMEOUT_S: Final = 30.0
IP_UDP_RTP_SRTP_BYTES: Final = 20 + 8 + 12 + 16  # the kernel path's payload estimate per datagram


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
    subscriber_path: str = "socket"  # or "kernel", "aiortc" (see the module docstring)
    publisher_path: str = "raw"  # or "aiortc" (see the module docstring)
    sessions: int = 1  # `session` itself, or `session-0` ... `session-{N-1}`
    ping_interval_s: float = 25.0  # signaling keepalive (the server closes a socket silent for 30 s)
    per_session: tuple[int, int] = (0, 0)  # (publishers, subscribers) per session when sessions > 1

    def session_of(self, index: int, kind: int) -> str:
        """The session of publisher (kind 0) or subscriber (kind 1) `index`."""
        if self.sessions <= 1:
            return self.session
        return f"{self.session}-{index // max(self.per_session[kind], 1)}"


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
        self.sink: KernelSink | None = None  # the kernel path's counters
        self.sunk: set[tuple[int, int]] = set()  # (local port, SSRC) of every subscribed media stream
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

    def snapshot(self, with_latency: bool, kernel: dict[tuple[int, int], tuple[int, int]] | None = None,
                 ) -> dict[str, Any]:  # fmt: skip
        """The counters now; on the kernel path `kernel` (nftables' counts, `KernelSink.counts`, read off
        the event loop by `_on_snapshot`) or, when None, the counts read here, synchronously."""
        streams = self.streams  # empty on the kernel path: its sequence-number fields stay 0
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
        if self.sink is not None:
            out.update(self._kernel_counts(self.sink.counts() if kernel is None else kernel))
        if with_latency:
            out["latency_ms"], self.latency_ms = self.latency_ms, []
        return out

    def _kernel_counts(self, counts: dict[tuple[int, int], tuple[int, int]]) -> dict[str, int]:
        """The kernel path's counts, from nftables per (port, SSRC): no sequence numbers, so no loss here
        (the report compares with what the publishers sent), no jitter, no latency."""
        sunk = self.sunk
        mine = [v for k, v in counts.items() if k in sunk]
        received = sum(p for p, _ in mine)
        return {
            "streams": len(sunk),
            "streams_live": sum(1 for p, _ in mine if p),
            "received": received,
            "received_bytes": sum(b for _, b in mine) - IP_UDP_RTP_SRTP_BYTES * received,
            "unmatched": sum(p for k, (p, _) in counts.items() if k not in sunk),
        }


def publisher_counter(state: WorkerState, publisher: int) -> Callable[[bytes, int], None]:
    """Counts every RTP packet a publisher sends (stamped, before SRTP) and, for the aiortc subscriber
    path's latency, fingerprints it."""
    stamps = state.stamps

    def on_packet(data: bytes, now_ns: int) -> None:
        state.pub_packets += 1
        state.pub_octets += len(data)
        if state.fingerprints:
            stamps.stamp(publisher, rtp_payload(data), now_ns)

    return on_packet


def frame_counter(state: WorkerState) -> Callable[[int, int], None]:
    """Counts a raw publisher's packets a frame at a time (no per-packet fingerprints needed)."""

    def on_frame(packets: int, octets: int) -> None:
        state.pub_packets += packets
        state.pub_octets += octets

    return on_frame


def _uncounted(packets: int, octets: int) -> None:
    """A raw publisher's frame whose packets `publisher_counter` already counted one by one."""


def hook_publisher(state: WorkerState, publisher: int, transport: Any) -> bool:
    """Counts and stamps every RTP packet the publisher's DTLS transport sends (`taps.hook_send`); False
    if aiortc moved `_send_rtp`."""
    return hook_send(transport, publisher_counter(state, publisher))


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

    def __init__(self, conn: Connection, plan: WorkerPlan, profiler: cProfile.Profile | None = None) -> None:
        self.conn = conn
        self.plan = plan
        self.state = WorkerState(plan.index)
        self.sessions: list[client_sdk.Session] = []
        self.readers: list[asyncio.Task[None]] = []
        self._gate = asyncio.Semaphore(plan.connect_concurrency)
        self.relay = RelayPeers(plan.url) if plan.target == "aiortc-relay" else None
        self.publishing: list[tuple[client_sdk.Session, list[str]]] = []
        self.raw = plan.publisher_path == "raw" and self.relay is None
        self.pacer = RawPacer(self.state.errors)
        if plan.connect_muted:
            self.pacer.pause()  # until `_on_unmute`: a muted feed's packets would be read and dropped
        self.profiler = profiler  # LOADTEST_PROFILE: enabled in the measurement window only
        self.socket_path = plan.subscriber_path == "socket" and self.relay is None
        self.kernel_path = plan.subscriber_path == "kernel" and self.relay is None
        self.state.fingerprints = not (self.socket_path or self.kernel_path)
        if plan.target == "sfu" and not self.kernel_path:  # nftables reads no stamp: 12 bytes less a packet
            install_send_time_extension()

    def token(self, uid: str, grants: dict[str, Any], session: str) -> str:
        plan = self.plan
        return client_sdk.tokens.create_token(plan.key_id, plan.secret, session, uid, grants=grants)

    async def connect(
        self, uid: str, grants: dict[str, Any], sid: str, ice_hosts: tuple[str, ...] | None = None
    ) -> client_sdk.Session:
        session = client_sdk.Session(
            self.plan.url,
            token=self.token(uid, grants, sid),
            auto_subscribe=False,
            reconnect=False,
            request_timeout_s=30.0,
            ice_hosts=ice_hosts,
            ping_interval_s=self.plan.ping_interval_s,
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
        packetized = {id(c): packetize(c) for c in clips} if self.raw else {}

        async def one(index: int) -> list[FeedRef]:
            clips_now = self.clips_of(index, clips)
            if self.relay is not None:
                async with self._gate:
                    found, sender_transport = await self.relay.publish(f"pub-{index}", clips_now)
                if not hook_publisher(self.state, index, sender_transport):
                    self.state.errors.append(f"pub-{index}: no send hook")
                return [FeedRef(feed_id, index, kind) for feed_id, kind in found]
            async with self._gate:
                sid = self.plan.session_of(index, 0)
                session = await self.connect(f"pub-{index}", {"subscribe": False}, sid)
                tracks: list[tuple[Any, str | None, str | None]] = [
                    (held_track(c) if self.raw else
                     EncodedAudioTrack(c) if c.kind == "audio" else EncodedVideoTrack(c), None, None)
                    for c in clips_now
                ]  # fmt: skip
                feeds = await session.publish_many(tracks)
                if self.plan.connect_muted:
                    for feed in feeds:
                        await session.mute(feed.feed_id, True)
                self.publishing.append((session, [f.feed_id for f in feeds]))
            if self.raw:
                on_sent = publisher_counter(self.state, index) if self.state.fingerprints else None
                on_frame = frame_counter(self.state) if on_sent is None else _uncounted
                delay_s = random.random() * self.plan.media.keyframe_s  # the same for both feeds
                for feed, clip in zip(feeds, clips_now, strict=True):
                    path = await self._send_path(feed.transceiver)
                    answer_consent_fast(path.dtls)  # once per socket: both feeds share the transport
                    # aioice fails a check answered after 0.5 s and closes after 6 in a row, far stricter
                    # than a browser (RFC 7675: 30 s without an answer); while hundreds of peers shake
                    # hands that closed publishers' transports, so their own checks are off
                    quiet_consent(path.dtls)
                    if feed.transceiver is not None:
                        silence_sender_rtcp(feed.transceiver.sender)  # the raw stream sends true SRs
                    # a silent publisher's audio is a thinned copy of the clip (clips_of): its own packets
                    clip_packets = packetized.get(id(clip)) or packetize(clip)
                    self.pacer.add(path, clip_packets, on_frame, delay_s, on_sent)
                return [FeedRef(f.feed_id, index, f.kind) for f in feeds]
            transceiver = feeds[0].transceiver
            if transceiver is None or not hook_publisher(self.state, index, transceiver.sender.transport):
                self.state.errors.append(f"pub-{index}: no send hook, latency not measured")
            return [FeedRef(f.feed_id, index, f.kind) for f in feeds]

        results = await self._gather([one(i) for i in self.plan.publishers])
        return [ref for refs in results if refs for ref in refs]

    async def _send_path(self, transceiver: Any) -> RawSendPath:
        """The raw send path once ICE and DTLS are up (publish returns after the answer, not after)."""
        deadline = time.monotonic() + SEND_PATH_TIMEOUT_S
        while True:
            path = raw_send_path(transceiver) if transceiver is not None else None
            if path is not None:
                return path
            if time.monotonic() > deadline:
                raise RuntimeError(f"publisher transport not connected after {SEND_PATH_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)

    async def subscribe(self, all_feeds: list[FeedRef]) -> int:
        plan = self.plan

        async def one(index: int) -> bool:
            sid = plan.session_of(index, 1)
            feeds = [f for f in all_feeds if plan.session_of(f.publisher, 0) == sid]
            if self.relay is not None:
                async with self._gate:
                    relayed = await self.relay.subscribe([f.feed_id for f in feeds], [f.kind for f in feeds])
                for ref, feed in zip(feeds, relayed, strict=True):
                    task = asyncio.create_task(read_feed(self.state, feed, ref), name=f"read-{index}")
                    self.readers.append(task)
                self.state.subscribers_connected += 1
                return True
            sink = self.state.sink
            async with self._gate:
                hosts = (sink.address,) if sink is not None else None
                session = await self.connect(f"sub-{index}", {"publish": False}, sid, hosts)
                # all at once: the server folds subscriptions that arrive together into one offer
                raws = await asyncio.gather(
                    *(session.subscribe(ref.feed_id, decode=False, timeout_s=60.0) for ref in feeds)
                )
                if self.socket_path:
                    self._tap_sockets(session, feeds, raws)
                    self.state.subscribers_connected += 1
                    return True
                if sink is not None:
                    self._sink_streams(session, feeds, raws)
                    silence_receivers(session)
                    quiet_consent(subscriber_dtls(session))
                    answer_consent_fast(subscriber_dtls(session))
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

    def _sink_streams(
        self, session: client_sdk.Session, feeds: list[FeedRef], raws: list[client_sdk.RawFeed]
    ) -> None:
        """The kernel path: the (local port, SSRC) pairs whose counters are this subscriber's streams."""
        ports = local_ports(subscriber_dtls(session))
        if not ports:
            raise RuntimeError("no ICE socket to count at")
        for ref, raw in zip(feeds, raws, strict=True):
            if raw.section is None or not raw.section.ssrcs:
                raise RuntimeError(f"feed {ref.feed_id}: the offer announced no SSRC to count by")
            self.state.sunk.update((port, ssrc) for port in ports for ssrc in raw.section.ssrcs)

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
        await self.pacer.close()
        for tap in self.state.taps:
            tap.detach()
        if self.state.sink is not None:
            self.state.sink.close()
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
        if self.kernel_path and self.plan.subscribers:
            sink = KernelSink.for_process()
            sink.install()
            self.state.sink = sink
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
        self.pacer.resume()  # from now: nothing that was due while muted is sent
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
            if self.profiler is not None:
                self.profiler.enable()
        if phase == "end":
            if self.profiler is not None:
                self.profiler.disable()
            self.state.measure_latency(False)
        sink = self.state.sink
        if sink is None:
            snap = self.state.snapshot(with_latency=phase == "end")
        else:
            # `nft` runs 0.1-0.5 s for thousands of counters: in the event loop it stalled every raw
            # publisher, which then sent what had come due in one burst (loss at a busy server, in the
            # load tool's own window only). In a thread the pacer keeps its pace; what the publishers had
            # sent is read just before `nft` starts, the same way at both ends of the window.
            sent = self.state.pub_packets, self.state.pub_octets
            counts = await asyncio.to_thread(sink.counts)
            snap = self.state.snapshot(with_latency=phase == "end", kernel=counts)
            snap["pub_packets"], snap["pub_octets"] = sent
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
    # A diagnostic: cProfile (CPU time) of each worker, over the measurement window only.
    profile_to = os.environ.get("LOADTEST_PROFILE")
    profiler = None
    if profile_to:
        profiler = cProfile.Profile(time.process_time)
    gc_tuning.tune()  # as the server does: a full collection would stall every publisher's pacing
    with runner:
        runner.run(_main(conn, plan, profiler))
    if profiler is not None:
        profiler.dump_stats(f"{profile_to}.{plan.index}.{os.getpid()}")


async def _main(conn: Connection, plan: WorkerPlan, profiler: cProfile.Profile | None) -> None:
    worker = Worker(conn, plan, profiler)
    try:
        await worker.serve()
    except Exception:
        conn.send(("error", traceback.format_exc(limit=5)))
    finally:
        await worker.close()
        conn.send(("stopped", worker.state.snapshot(with_latency=False)))
