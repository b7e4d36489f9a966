"""Recording N feeds at once: no frame lost in the files, forwarding unaffected, and the server's CPU cost.

    .venv/bin/python -m loadtest.bench_recording [--feeds 20] [--seconds 15] [--audio]

`sfu serve` runs as a child (loadtest/spawn.py). This process publishes `--feeds` pre-encoded VP8 clips
(one participant each, `--audio` adds an Opus feed per participant) and watchers (one per
`--feeds-per-watcher` feeds) subscribe with `decode=False`, reassembling frames with the server's
depacketizer. Two windows of `--seconds`: without recording, then recording every feed
(`POST /v1/sessions/{sid}/recordings`). For each window: the server's CPU (utime + stime of its process
tree), frames and lost packets the watchers got. After the stop, each file is demuxed (PyAV, no decoding)
and its frames are compared with what the watcher received over the same stretch (CRC-32 + size): a frame
forwarded while the file was open but missing from it is a recording loss; frames the watcher itself lost
(its seq gaps) are counted apart. Exit code 0 if no file lacks a forwarded frame. Prints a markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import client_sdk
from client_sdk.admin import AdminClient
from client_sdk.encoded import EncodedAudioTrack, EncodedVideoTrack
from client_sdk.tokens import create_admin_token, create_token
from sfu.recording.depacketize import Depacketizer

Fingerprint = tuple[int, int]  # (CRC-32, size) of one encoded frame
SESSION = "bench-recording"


@dataclass(slots=True)
class FrameLog:
    """What one subscribed feed delivered: frame fingerprints with arrival times, packets and seq gaps."""

    feed_id: str
    kind: str
    frames: list[Fingerprint] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    packets: int = 0
    lost: int = 0
    _last_seq: int = -1

    def on_seq(self, seq: int) -> None:
        self.packets += 1
        if self._last_seq >= 0:
            delta = (seq - self._last_seq) & 0xFFFF
            if delta >= 0x8000:
                return  # late or duplicate: not a new gap
            self.lost += delta - 1
        self._last_seq = seq

    def frames_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.arrivals if start <= t < end)


def fingerprint(data: bytes) -> Fingerprint:
    return zlib.crc32(data), len(data)


async def watch_feed(raw: client_sdk.RawFeed, log: FrameLog) -> None:
    """Reassembles the frames of a raw subscription into `log` until the feed ends or the task stops."""
    section = raw.section
    codec = raw.codec
    if section is None or codec is None:
        raise ValueError(f"feed {raw.feed_id} has no negotiated codec")
    payload_type = next(iter(section.codecs_by_pt))
    depacketizer = Depacketizer(codec)
    async for packet in raw.packets():
        if packet.payload_type != payload_type:
            continue
        log.on_seq(packet.sequence_number)
        frames = depacketizer.push_payload(packet.sequence_number, packet.timestamp, bool(packet.marker),
                                           packet.payload)
        if frames:
            now = time.monotonic()
            for frame in frames:
                log.frames.append(fingerprint(frame.data))
                log.arrivals.append(now)


def file_fingerprints(path: Path) -> list[Fingerprint]:
    """Every packet of the file's first stream, demuxed with PyAV (no decoding)."""
    import av

    with av.open(str(path)) as container:
        return [fingerprint(bytes(p)) for p in container.demux(container.streams[0]) if p.size]


@dataclass(frozen=True, slots=True)
class Match:
    recorded: int  # frames in the file
    forwarded: int  # frames the subscriber got from the file's first frame to its last
    not_in_file: int  # of those, frames the file lacks: frames the recording lost
    not_received: int  # frames in the file the subscriber never got (its own loss, not the recording's)

    @property
    def exact(self) -> bool:
        """The file is exactly the stretch of frames forwarded while it was open."""
        return self.recorded > 0 and self.not_in_file == 0 and self.not_received == 0


def compare(recorded: list[Fingerprint], forwarded: list[Fingerprint]) -> Match:
    """The file's frames against the subscriber's over the same stretch, as multisets (clips may loop:
    every place where the file's first frame the subscriber also got appears is tried, the best kept)."""
    n = len(recorded)
    if not n:
        return Match(0, 0, 0, 0)
    where: dict[Fingerprint, list[int]] = {}
    for index, frame in enumerate(forwarded):
        where.setdefault(frame, []).append(index)
    for start in where.get(recorded[0], ()):
        if forwarded[start : start + n] == recorded:
            return Match(n, n, 0, 0)
    first = next((k for k in range(n) if recorded[k] in where), -1)
    if first < 0:
        return Match(n, 0, 0, n)
    in_file = Counter(recorded)
    best: Match | None = None
    for start in where[recorded[first]]:
        end = start
        for k in range(n - 1, first - 1, -1):  # the file's last frame the subscriber got after `start`
            later = [x for x in where.get(recorded[k], ()) if x >= start]
            if later:  # identical frames repeat (audio): the occurrence nearest where it should be
                end = min(later, key=lambda x: abs(x - (start + k - first)))
                break
        window = Counter(forwarded[start : end + 1])
        match = Match(n, end - start + 1, sum((window - in_file).values()), sum((in_file - window).values()))
        if best is None or match.not_in_file + match.not_received < best.not_in_file + best.not_received:
            best = match
    assert best is not None
    return best


def _stat(pid: int) -> list[str]:
    """proc(5) /proc/PID/stat fields from the 3rd on (state, ppid, ...); [] if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return []


def server_cpu_s(pid: int) -> float:
    """utime + stime of the server process and all its descendants (`sfu serve` may run media workers)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                parents[int(entry)] = int(fields[1])
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    ticks = 0
    for member in tree:
        fields = _stat(member)
        if fields:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Window:
    name: str
    seconds: float = 0.0
    cpu_s: float = 0.0
    frames: int = 0
    lost: int = 0
    packets: int = 0

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.seconds if self.seconds else 0.0


async def measure(name: str, pid: int, logs: list[FrameLog], seconds: float) -> Window:
    packets0 = sum(log.packets for log in logs)
    lost0 = sum(log.lost for log in logs)
    cpu0, t0 = server_cpu_s(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1 = server_cpu_s(pid), time.monotonic()
    return Window(name, t1 - t0, cpu1 - cpu0, sum(log.frames_between(t0, t1) for log in logs),
                  sum(log.lost for log in logs) - lost0, sum(log.packets for log in logs) - packets0)


async def run(args: argparse.Namespace) -> int:
    import aioice.turn

    from loadtest.media import encode_opus, encode_vp8
    from loadtest.spawn import SpawnedServer

    # NOTE: aioice 0.13 sizes each ICE socket's SO_RCVBUF from this at gathering time (as loadtest's workers)
    aioice.turn.UDP_SOCKET_BUFFER_SIZE = args.udp_buffer

    clip_s = float(round(args.warmup + 2 * args.seconds + 10))  # no loop during the run: unique frames
    video_clip = encode_vp8(args.width, args.height, 30, clip_s, args.bitrate, 2.0)
    audio_clip = encode_opus(clip_s) if args.audio else None
    with SpawnedServer() as server:
        publishers: list[client_sdk.Session] = []
        watchers: list[client_sdk.Session] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            for i in range(args.feeds):
                token = create_token(server.key_id, server.secret, SESSION, f"pub{i:02d}")
                session = client_sdk.Session(server.url, token=token, auto_subscribe=False)
                publishers.append(session)
                await session.join()
                tracks: list[Any] = [(EncodedVideoTrack(video_clip, loop=True), "camera", None)]
                if audio_clip is not None:
                    tracks.append((EncodedAudioTrack(audio_clip, loop=True), "microphone", None))
                await session.publish_many(tracks)
            logs: list[FrameLog] = []
            feeds = [f for p in publishers for f in p.local_feeds]
            for first in range(0, len(feeds), args.feeds_per_watcher):
                uid = f"watcher{first // args.feeds_per_watcher:02d}"
                token = create_token(server.key_id, server.secret, SESSION, uid, grants={"publish": False})
                watcher = client_sdk.Session(server.url, token=token, auto_subscribe=False)
                watchers.append(watcher)
                await watcher.join()
                for feed in feeds[first : first + args.feeds_per_watcher]:
                    raw = await watcher.subscribe(feed.feed_id, decode=False)
                    log = FrameLog(feed.feed_id, feed.kind)
                    logs.append(log)
                    tasks.append(asyncio.create_task(watch_feed(raw, log), name=f"watch-{feed.feed_id}"))
            await asyncio.sleep(args.warmup)
            baseline = await measure("forwarding only", server.pid, logs, args.seconds)
            async with AdminClient(server.url, create_admin_token(server.key_id, server.secret)) as admin:
                recording_id = await admin.start_recording(SESSION)
                recording = await measure("forwarding + recording", server.pid, logs, args.seconds)
                stop_started = time.monotonic()
                result = await admin.stop_recording(SESSION, recording_id)
                stop_s = time.monotonic() - stop_started
            await asyncio.sleep(0.5)  # the watcher's last packets of the recorded stretch
            directory = server.data_dir / "recordings" / recording_id
            rows: list[tuple[FrameLog, dict[str, Any] | None, Match]] = []
            for log in logs:
                entry = next((f for f in result["files"] if f["feed_id"] == log.feed_id), None)
                if entry is None:
                    rows.append((log, None, Match(0, 0, 0, 0)))
                    continue
                recorded = await asyncio.to_thread(file_fingerprints, directory / entry["name"])
                rows.append((log, entry, compare(recorded, log.frames)))
            report(args, baseline, recording, rows, stop_s)
            return 0 if all(m.recorded and not m.not_in_file for _, _, m in rows) else 1
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for session in [*publishers, *watchers]:
                with contextlib.suppress(Exception):
                    await session.close()


def report(args: argparse.Namespace, baseline: Window, recording: Window,
           rows: list[tuple[FrameLog, dict[str, Any] | None, Match]], stop_s: float) -> None:
    feeds = len(rows)
    exact = sum(1 for _, _, m in rows if m.exact)
    recorded = sum(m.recorded for _, _, m in rows)
    forwarded = sum(m.forwarded for _, _, m in rows)
    not_in_file = sum(m.not_in_file for _, _, m in rows)
    not_received = sum(m.not_received for _, _, m in rows)
    drops: dict[str, int] = {}
    for _, entry, _ in rows:
        for reason, count in (entry or {}).get("drops", {}).items():
            drops[reason] = drops.get(reason, 0) + count
    print(f"{feeds} feeds ({args.feeds} x VP8 {args.width}x{args.height} {args.bitrate // 1000} kbit/s 30 fps"
          f"{' + Opus' if args.audio else ''}), {args.seconds:.0f} s per window\n")
    print("| window | server CPU | frames forwarded/s | packets forwarded/s | packets lost |")
    print("|---|---|---|---|---|")
    for w in (baseline, recording):
        print(f"| {w.name} | {w.cpu_pct:.1f} % | {w.frames / w.seconds:.0f} | {w.packets / w.seconds:.0f} "
              f"| {w.lost} |")
    delta = recording.cpu_pct - baseline.cpu_pct
    print(f"\nrecording cost: {delta:+.1f} % of one core for {feeds} feeds ({delta / max(1, feeds):+.2f} % "
          f"per feed); stop (all files final) took {stop_s * 1000:.0f} ms")
    print(f"files: {exact}/{feeds} hold exactly the frames forwarded while they were open; recorded "
          f"{recorded} frames, subscribers got {forwarded} over the same stretches; forwarded but not in a "
          f"file: {not_in_file}; in a file but lost on the way to the subscriber: {not_received}; recorder "
          f"drops {({k: v for k, v in drops.items() if v}) or 'none'}")
    for log, entry, match in rows:
        if not match.exact:
            print(f"  {log.feed_id} ({log.kind}): {match}, subscriber lost {log.lost} packets, "
                  f"recorder drops {(entry or {}).get('drops')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--feeds", type=int, default=20, help="publishers, one VP8 feed each")
    parser.add_argument("--audio", action="store_true", help="each publisher adds an Opus feed")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each measuring window")
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--bitrate", type=int, default=600_000)
    parser.add_argument("--feeds-per-watcher", type=int, default=5,
                        help="feeds per subscribing participant (each has its own bandwidth estimate)")
    parser.add_argument("--udp-buffer", type=int, default=2 * 1024 * 1024, help="client SO_RCVBUF bytes")
    raise SystemExit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
