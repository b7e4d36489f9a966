"""One load run: start the worker processes, connect publishers then subscribers, measure a window, stop.

The parent only coordinates and reads: worker snapshots over pipes and the server's `/metrics` at the
start and end of the measurement window. Every wait has a deadline, so a run always ends by itself.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from loadtest.pipe import recv
from loadtest.report import Report, build_report, machine_busy_s, udp_rcvbuf_errors
from loadtest.worker import MediaSpec, WorkerPlan, worker_main

PROGRESS_EVERY_S: Final = 2.0
SUBSCRIBERS_PER_WORKER: Final = 25
FIRST_PACKET_TIMEOUT_S: Final = 20.0


@dataclass(frozen=True, slots=True)
class LoadConfig:
    url: str
    key_id: str
    secret: str
    publishers: int = 1  # per session
    subscribers: int = 1  # per session
    duration_s: float = 20.0
    warmup_s: float = 2.0
    workers: int = 0  # 0: one per 25 subscribers, at most one per core
    media: MediaSpec = field(default_factory=MediaSpec)
    session: str = ""  # "" -> a fresh name per run
    connect_timeout_s: float = 0.0  # 0 -> 30 s + 1 s per participant
    target: str = "sfu"  # "sfu" (pysfu) or "aiortc-relay" (loadtest/aiortc_relay.py)
    udp_buffer_bytes: int = 2 * 1024 * 1024  # SO_RCVBUF of the workers' ICE sockets
    connect_muted: bool = False  # pysfu: feeds muted until every subscriber is connected (big runs)
    subscriber_path: str = "socket"  # count at the UDP socket, "kernel" or "aiortc" (loadtest/worker.py)
    sessions: int = 1  # equal sessions of publishers x subscribers, spread over the same load workers
    publisher_path: str = "raw"  # pre-packetized RTP, or "aiortc" (loadtest/worker.py)
    ping_interval_s: float = 25.0  # each session's signaling keepalive (the SDK's default: 10 s)

    def worker_count(self) -> int:
        if self.workers > 0:
            return self.workers
        wanted = math.ceil(max(self.subscribers * self.sessions, 1) / SUBSCRIBERS_PER_WORKER)
        return max(1, min(wanted, os.cpu_count() or 1))


def plan_workers(config: LoadConfig, session: str) -> list[WorkerPlan]:
    """Publishers and subscribers round-robin; publisher i and subscribers i, i+W... share worker i % W.
    With several sessions, participant i of each kind is in session i // (its count per session)."""
    count = config.worker_count()
    return [
        WorkerPlan(
            index=w,
            url=config.url,
            key_id=config.key_id,
            secret=config.secret,
            session=session,
            publishers=tuple(range(w, config.publishers * config.sessions, count)),
            subscribers=tuple(range(w, config.subscribers * config.sessions, count)),
            sessions=config.sessions,
            per_session=(config.publishers, config.subscribers),
            media=config.media,
            target=config.target,
            udp_buffer_bytes=config.udp_buffer_bytes,
            connect_muted=config.connect_muted and config.target == "sfu",
            subscriber_path=config.subscriber_path,
            publisher_path=config.publisher_path,
            ping_interval_s=config.ping_interval_s,
        )
        for w in range(count)
    ]


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {name: value summed over labels} plus {name{labels}: value} for every sample."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The server's /metrics, or {} if it cannot be read (then the server columns stay empty)."""
    try:
        async with http.get(f"{url.rstrip('/')}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as reply:
            if reply.status != 200:
                return {}
            return parse_metrics(await reply.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}


class _Workers:
    """The worker processes and their pipes; `close()` stops them, politely first."""

    def __init__(self, plans: list[WorkerPlan]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[BaseProcess] = []
        for plan in plans:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(child, plan), name=f"loadtest-worker-{plan.index}", daemon=True
            )
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        self.errors: list[str] = []

    async def expect(
        self, kind: str, timeout_s: float, on_other: Callable[[int, Any], None] | None = None
    ) -> list[Any]:
        """One `kind` reply from every worker (a worker's `error` is kept and stands in as None); other
        messages (progress) go to `on_other(worker index, message)`."""
        replies: list[Any] = []
        deadline = time.monotonic() + timeout_s
        for index, conn in enumerate(self.conns):
            while True:
                message = await recv(conn, max(0.1, deadline - time.monotonic()))
                if on_other is not None and message[0] not in (kind, "error"):
                    on_other(index, message)
                if message[0] == kind:
                    replies.append(message[1])
                    break
                if message[0] == "error":
                    self.errors.append(str(message[1]))
                    replies.append(None)
                    break
        return replies

    def send(self, command: str, arg: Any = None) -> None:
        for conn in self.conns:
            conn.send((command, arg))

    async def snapshot(self, phase: str) -> list[dict[str, Any]]:
        self.send("snapshot", phase)
        return [s for s in await self.expect("snapshot", 30.0) if s is not None]

    async def close(self) -> list[dict[str, Any]]:
        finals: list[dict[str, Any]] = []
        for conn in self.conns:
            try:
                conn.send(("stop", None))
            except (OSError, ValueError):
                continue
        for conn in self.conns:
            try:
                while True:
                    message = await recv(conn, 20.0)
                    if message[0] == "stopped":
                        finals.append(message[1])
                        break
            except (TimeoutError, EOFError, OSError):
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in self.conns:
            conn.close()
        return finals


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def run_load(config: LoadConfig, progress: Callable[[str], None] | None = _stderr) -> Report:
    """Runs one configuration against a running server and returns its report."""
    say = progress or (lambda _line: None)
    session = config.session or f"loadtest-{uuid.uuid4().hex[:8]}"
    config.media.clips()  # encode (or load) once here, so workers never race to fill the cache
    plans = plan_workers(config, session)
    if config.sessions > 1 and config.target != "sfu":
        raise ValueError("several sessions at once: pysfu only (the aiortc relay has no sessions)")
    participants = (config.publishers + config.subscribers) * config.sessions
    subscribers = config.subscribers * config.sessions
    connect_s = config.connect_timeout_s or 30.0 + participants
    started = time.monotonic()
    say(
        f"loadtest: {config.publishers} publisher(s) x {config.subscribers} subscriber(s), "
        f"{len(plans)} worker(s), session {session}"
        + (f" (and {config.sessions - 1} more like it)" if config.sessions > 1 else "")
    )
    workers = _Workers(plans)
    async with aiohttp.ClientSession() as http:
        try:
            published = await workers.expect("published", connect_s)
            feeds = [f for reply in published if reply for f in reply]
            say(f"loadtest: {len(feeds)} feed(s) published in {time.monotonic() - started:.1f} s")
            workers.send("subscribe", feeds)
            subscribing = time.monotonic()
            connected = [0] * len(plans)

            def on_connecting(index: int, message: Any) -> None:
                if message[0] == "connecting":
                    connected[index] = message[1]
                    if index == 0:
                        elapsed_s = time.monotonic() - subscribing
                        say(f"loadtest: [{elapsed_s:5.1f} s] {sum(connected)}/{subscribers} connected")

            await workers.expect("subscribed", connect_s, on_connecting)
            connected_s = time.monotonic() - subscribing
            say(f"loadtest: {subscribers} subscriber(s) connected in {connected_s:.1f} s")
            if config.connect_muted and config.target == "sfu":
                workers.send("unmute")
                await workers.expect("unmuted", connect_s)
            await _wait_for_packets(workers, config.subscribers * len(feeds), say)  # feeds of all sessions
            await asyncio.sleep(config.warmup_s)
            metrics0 = await scrape(http, config.url)
            snaps0 = await workers.snapshot("begin")
            t0, busy0, overflows0 = time.monotonic(), machine_busy_s(), udp_rcvbuf_errors()
            if progress is None:  # quiet: no scrapes or snapshots inside the window (many runs at once)
                await asyncio.sleep(config.duration_s)
            else:
                await _progress(workers, http, config, metrics0, t0, say)
            snaps1 = await workers.snapshot("end")
            t1, busy1, overflows1 = time.monotonic(), machine_busy_s(), udp_rcvbuf_errors()
            metrics1 = await scrape(http, config.url)
        finally:
            finals = await workers.close()
    errors = workers.errors + sorted({e for s in finals for e in s.get("errors", [])})
    return build_report(
        config.publishers,
        config.subscribers,
        len(plans),
        len(feeds),
        (snaps0, snaps1),
        (metrics0, metrics1),
        t1 - t0,
        errors,
        busy1 - busy0,
        overflows1 - overflows0,
        config.target,
        config.subscriber_path if config.target == "sfu" else "aiortc",
        config.sessions,
    )


async def _wait_for_packets(workers: _Workers, streams: int, say: Callable[[str], None]) -> None:
    """Until every subscribed stream has had a packet (video waits for a key frame), or a deadline."""
    deadline = time.monotonic() + FIRST_PACKET_TIMEOUT_S
    live = 0
    while time.monotonic() < deadline:
        live = sum(s["streams_live"] for s in await workers.snapshot("progress"))
        if live >= streams:
            return
        await asyncio.sleep(0.5)
    say(f"loadtest: only {live}/{streams} streams receive packets; measuring anyway")


async def _progress(
    workers: _Workers,
    http: aiohttp.ClientSession,
    config: LoadConfig,
    metrics0: dict[str, float],
    t0: float,
    say: Callable[[str], None],
) -> None:
    """The measurement window, with one progress line every PROGRESS_EVERY_S."""
    end = t0 + config.duration_s
    previous = (t0, metrics0, sum(s["received"] for s in await workers.snapshot("progress")))
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(PROGRESS_EVERY_S, left))
        now = time.monotonic()
        metrics = await scrape(http, config.url)
        snaps = await workers.snapshot("progress")
        span = max(now - previous[0], 1e-6)
        received = sum(s["received"] for s in snaps)
        if config.target == "sfu":
            out = metrics.get("sfu_packets_out_total", 0) - previous[1].get("sfu_packets_out_total", 0)
        else:  # the relay counts nothing: what its subscribers received
            out = received - previous[2]
        out_pps = out / span
        cpu = metrics.get("process_cpu_seconds_total", 0) - previous[1].get("process_cpu_seconds_total", 0)
        expected = sum(s["expected"] for s in snaps) or 1
        lost = sum(s["lost"] for s in snaps)
        say(
            f"[{now - t0:5.1f} s] received {received} pkts | server out "
            f"{out_pps:.0f} pkt/s, cpu {100 * cpu / span:.0f}% | loss {100 * lost / expected:.2f}%"
        )
        previous = (now, metrics, received)
