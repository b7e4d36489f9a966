"""Forwarding with `sfu serve --workers 1` vs `--workers 2`: many sessions of 1 publisher x N subscribers.

    python -m loadtest.bench_workers                       # 8 sessions of 1 x 20, 20 s, workers 1 then 2
    python -m loadtest.bench_workers --sessions 12,16 --client-nice 10 --workers 1,2
    python -m loadtest.bench_workers --pairs 30:56,32:58 --rounds 2 --connect-muted  # interleaved

For each worker count and session count a fresh server is spawned (`SFU_WORKERS`), then
`--client-processes` runs of `python -m loadtest --sessions K` share the sessions (each session its own
name, so the front spreads them over the workers). Once the server forwards to every subscriber (its
`sfu_forwarders` gauge), this script measures one common window of `--duration` seconds: packets
forwarded per second on the server's `/metrics` (the sum over workers), the CPU of each server process
from /proc (front, worker, ...), and what the subscribers received and lost (the load tool's own
reports; their windows lie inside the common one).

The clients run on the same machine, so what they cost is taken from the server's cores. By default
they cost as little as the load tool can make them: publishers send pre-packetized RTP from one pacer
per process (`--publisher-path raw`), and an nftables rule counts and drops the subscribers' media before
any socket (`--subscriber-path kernel`: needs root and `nft`; see loadtest/kernel_sink.py), so the
client processes are hardly ever woken. `--client-nice` runs them at a lower priority and
`--server-cpus`/`--client-cpus` pin either side with `taskset`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from loadtest.kernel_sink import counted_everywhere
from loadtest.report import machine_busy_s, udp_rcvbuf_errors
from loadtest.runner import parse_metrics
from loadtest.spawn import SpawnedServer
from loadtest.worker import PUBLISHER_PATHS, SUBSCRIBER_PATHS

FEEDS_PER_PUBLISHER = 2  # VP8 + Opus
READY_TIMEOUT_S = 180.0
CLIENT_MARGIN_S = 10.0
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Point:
    workers: int
    sessions: int
    streams: int
    offered_pps: float  # packets the publishers sent x subscribers: what full delivery would be
    forwarded_pps: float  # the server's sfu_packets_out_total
    delivered_pps: float  # what the subscribers received
    loss_pct: float
    client_loss_pct: float  # the load tool's own count: its publishers' packets x subscribers vs received
    server_cpu_pct: float
    process_cpu_pct: list[float]  # front first, then each worker
    us_per_packet: float  # server CPU (all processes) per forwarded packet
    client_us_per_packet: float  # load-tool CPU per received packet
    machine_cpu_pct: float
    load_avg: float  # 1-minute load average at the end of the window
    rcvbuf_drops: float  # datagrams the kernel dropped on full UDP receive buffers (machine-wide), per s
    failed_runs: int


def _metrics(url: str, attempts: int = 3) -> dict[str, float]:
    """The server's /metrics; a saturated server may answer late, so a few tries with a long timeout."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=30) as reply:
                return parse_metrics(reply.read().decode())
        except (OSError, ValueError) as exc:
            print(f"bench_workers: /metrics: {exc}", file=sys.stderr)
            if attempt == attempts - 1:
                raise
    return {}


def _total(metrics: dict[str, float], name: str) -> float:
    return metrics.get(name, 0.0)  # parse_metrics sums every label set under the bare name


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    return found


def server_processes(pid: int) -> list[int]:
    """The server's process and its descendants (front, then workers, and their helpers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo += _children(p)
    return out


def cpu_s(pid: int) -> float:
    """utime + stime of one process (/proc/PID/stat fields 14 and 15), NaN once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return math.nan


def _client_command(
    args: argparse.Namespace, server: SpawnedServer, run_s: float, sessions: int
) -> list[str]:
    prefix: list[str] = []
    if args.client_cpus:
        prefix += ["taskset", "-c", args.client_cpus]
    if args.client_nice:
        prefix += ["nice", "-n", str(args.client_nice)]
    return [*prefix, sys.executable, "-m", "loadtest", "--url", server.url, "--key-id", server.key_id,
            "--secret", server.secret, "-p", "1", "-s", str(args.subscribers), "--sessions", str(sessions),
            "--duration", str(run_s),
            "--subscriber-path", args.subscriber_path, "--publisher-path", args.publisher_path,
            "--json", "--quiet", *(["--connect-muted"] if args.connect_muted else []),
            *(["--workers", str(client_workers(args))] if client_workers(args) else [])]  # fmt: skip


def client_workers(args: argparse.Namespace) -> int:
    """Worker processes per load tool run: one where the clients do no per-packet work in Python but
    the raw publishers' sends (kernel subscribers), since each process adds its own timers and wakeups
    (one process cost ~20-28 % less CPU than two for the same 30 sessions); else the load tool's
    default (one per 25 subscribers, at most one per core)."""
    if args.client_workers >= 0:
        return int(args.client_workers)
    return 1 if args.subscriber_path == "kernel" and args.publisher_path == "raw" else 0


def run_point(args: argparse.Namespace, workers: int, sessions: int) -> Point:
    streams = sessions * args.subscribers * FEEDS_PER_PUBLISHER
    os.environ["SFU_WORKERS"] = str(workers)
    try:
        with SpawnedServer() as server:
            if args.server_cpus:
                for pid in server_processes(server.pid):
                    subprocess.run(["taskset", "-a", "-p", "-c", args.server_cpus, str(pid)],
                                   check=True, capture_output=True)  # fmt: skip
            run_s = args.duration + CLIENT_MARGIN_S  # each client's own window spans the common one
            shares = [len(range(i, sessions, args.client_processes)) for i in range(args.client_processes)]
            procs = [subprocess.Popen(_client_command(args, server, run_s, share), stdout=subprocess.PIPE,
                                      text=True) for share in shares if share]  # fmt: skip
            try:
                window = _measure(server, streams, args.duration, args.subscriber_path == "kernel")
                outputs = [p.communicate(timeout=run_s + READY_TIMEOUT_S)[0] for p in procs]
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
    finally:
        os.environ.pop("SFU_WORKERS", None)
    reports: list[dict[str, Any]] = []
    for text in outputs:
        with contextlib.suppress(ValueError, KeyError):  # a failed run printed its error on stderr
            reports.append(json.loads(text)["report"])
    for r in reports:  # what the table cannot show: why a run lost packets
        if r.get("errors") or r.get("server_drops"):
            print(f"bench_workers: {workers} worker(s), {sessions} sessions: errors {r['errors'][:3]}, "
                  f"server drops {r.get('server_drops')}", file=sys.stderr)  # fmt: skip
    expected = sum(r["expected"] for r in reports)
    loss = client_loss = 100.0 * sum(r["lost"] for r in reports) / expected if expected else math.nan
    offered = sum(r["sent_pps"] * r["subscribers"] for r in reports)  # subscribers per session
    delivered = sum(r["received_pps"] for r in reports)
    client_us = [(r["client_cpu_us_per_packet"] or math.nan, r["received_pps"]) for r in reports]
    weight = sum(w for _, w in client_us)
    client_us_per_packet = sum(u * w for u, w in client_us) / weight if weight else math.nan
    if not math.isnan(window.counted_pps):  # kernel path: everything from the common window
        # offered: what the publishers sent (read by the server, or dropped on its full socket) x subscribers
        offered = (window.in_pps + window.rcvbuf_drops_pps) * args.subscribers
        delivered = window.counted_pps
        loss = max(0.0, 100.0 * (1.0 - delivered / offered)) if offered else math.nan
    fwd = window.forwarded_pps
    return Point(workers, sessions, streams, offered, fwd, delivered, loss, client_loss,
                 window.server_cpu_pct, window.process_cpu_pct,
                 window.server_cpu_pct * 1e4 / fwd if fwd else math.nan,
                 client_us_per_packet, window.machine_cpu_pct, os.getloadavg()[0], window.rcvbuf_drops_pps,
                 len(procs) - len(reports))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Window:
    forwarded_pps: float
    server_cpu_pct: float
    process_cpu_pct: list[float]
    machine_cpu_pct: float
    rcvbuf_drops_pps: float
    in_pps: float  # what the server read from publishers
    counted_pps: float  # the kernel path's subscribers, all runs, this window (NaN on other paths)


def _measure(server: SpawnedServer, streams: int, duration_s: float, kernel: bool) -> Window:
    """Waits for every forwarder, then measures one window: the server's counters and CPU, the machine's
    CPU and UDP drops and, on the kernel path, what the nftables rules counted (the same window)."""
    url = server.url
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if _total(_metrics(url), "sfu_forwarders") >= streams:
            break
        time.sleep(1.0)
    else:
        print(f"bench_workers: not every stream is forwarded after {READY_TIMEOUT_S:.0f} s; measuring anyway",
              file=sys.stderr)  # fmt: skip
    time.sleep(3.0)  # key frames of the last joins settle
    pids = server_processes(server.pid)
    # the counters are read right after /metrics answers, which takes up to ~0.5 s from a saturated server
    m0 = _metrics(url)
    k0 = counted_everywhere() if kernel else 0
    busy0, t0, drops0 = machine_busy_s(), time.monotonic(), udp_rcvbuf_errors()
    c0 = [cpu_s(p) for p in pids]
    time.sleep(duration_s)
    c1 = [cpu_s(p) for p in pids]
    m1 = _metrics(url)
    k1 = counted_everywhere() if kernel else 0
    busy1, t1, drops1 = machine_busy_s(), time.monotonic(), udp_rcvbuf_errors()
    span = t1 - t0

    def rate(name: str) -> float:
        return (_total(m1, name) - _total(m0, name)) / span

    per_process = [round(100.0 * (b - a) / span, 1) for a, b in zip(c0, c1, strict=True)]
    busy = [c for c in per_process if not math.isnan(c) and c >= 0.5]  # the server's idle helpers left out
    return Window(rate("sfu_packets_out_total"), sum(busy), busy, 100.0 * (busy1 - busy0) / span,
                  (drops1 - drops0) / span, rate("sfu_packets_in_total"),
                  (k1 - k0) / span if kernel else math.nan)  # fmt: skip


def _list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_workers", description=__doc__.splitlines()[0])
    p.add_argument("--sessions", default="8", help="concurrent sessions (one load run each), e.g. 8,12,16")
    p.add_argument("--subscribers", type=int, default=20, help="subscribers per session (1 publisher)")
    p.add_argument("--duration", type=float, default=20.0, help="common measurement window, seconds")
    p.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2")
    p.add_argument("--subscriber-path", choices=SUBSCRIBER_PATHS, default="kernel",
                   help="how the load tool's subscribers count (python -m loadtest --help)")  # fmt: skip
    p.add_argument("--publisher-path", choices=PUBLISHER_PATHS, default="raw",
                   help="how the load tool's publishers send (python -m loadtest --help)")  # fmt: skip
    p.add_argument("--connect-muted", action="store_true",
                   help="feeds muted until every subscriber is connected (no media while peers connect)")
    p.add_argument("--client-processes", type=int, default=1,
                   help="load tool runs sharing the sessions (each has its own workers)")  # fmt: skip
    p.add_argument("--client-nice", type=int, default=0, help="run the load tool under `nice -n N`")
    p.add_argument("--client-workers", type=int, default=-1,
                   help="worker processes of each load tool run (0: the load tool's default, one "
                        "per core at most; default: 1 with kernel subscribers, raw publishers)")  # fmt: skip
    p.add_argument("--client-cpus", default="", help="pin the load tool: `taskset -c LIST`")
    p.add_argument("--server-cpus", default="", help="pin every server process: `taskset -a -p -c LIST`")
    p.add_argument("--pairs", default="",
                   help="interleaved runs instead of --sessions/--workers: S1:S2,... runs S1 sessions on 1 "
                        "worker, then S2 on 2, pair by pair (this VM's speed drifts by minutes)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=1, help="with --pairs: how many times the list is run")
    args = p.parse_args(argv)
    plan = [(count, sessions) for sessions in _list(args.sessions) for count in _list(args.workers)]
    if args.pairs:
        pairs = [tuple(int(n) for n in pair.split(":")) for pair in args.pairs.split(",")]
        plan = [(w, pair[w - 1]) for _ in range(args.rounds) for pair in pairs for w in (1, 2)]
    points = []
    for count, sessions in plan:
        print(f"bench_workers: {time.strftime('%H:%M:%S', time.gmtime())} UTC --workers {count}, {sessions} "
              f"sessions of 1 x {args.subscribers}", file=sys.stderr, flush=True)  # fmt: skip
        points.append(run_point(args, count, sessions))
        pt = points[-1]
        print(f"bench_workers: forwarded {pt.forwarded_pps:.0f} pkt/s, loss {pt.loss_pct:.3f} %, client loss "
              f"{pt.client_loss_pct:.3f} %", file=sys.stderr, flush=True)  # fmt: skip
    print(f"python -m loadtest.bench_workers {' '.join(sys.argv[1:] if argv is None else argv)}")
    print("| workers | sessions | streams | offered pkt/s | forwarded pkt/s | delivered pkt/s | loss % "
          "| client loss % | server CPU % (front, workers) | server us/fwd pkt | client us/recv pkt "
          "| machine CPU % | load avg | rcvbuf drops/s | failed runs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for pt in points:
        per = ", ".join(f"{c:.0f}" for c in pt.process_cpu_pct)
        print(f"| {pt.workers} | {pt.sessions} | {pt.streams} | {pt.offered_pps:.0f} "
              f"| {pt.forwarded_pps:.0f} | {pt.delivered_pps:.0f} | {pt.loss_pct:.3f} "
              f"| {pt.client_loss_pct:.3f} "
              f"| {pt.server_cpu_pct:.0f} ({per}) "
              f"| {pt.us_per_packet:.1f} | {pt.client_us_per_packet:.1f} "
              f"| {pt.machine_cpu_pct:.0f} of {100 * (os.cpu_count() or 1)} | {pt.load_avg:.1f} "
              f"| {pt.rcvbuf_drops:.0f} | {pt.failed_runs} |")  # fmt: skip
    if args.pairs:
        per_round = len(points) // max(args.rounds, 1)
        for r in range(args.rounds if args.rounds > 1 else 0):
            _print_capacity(points[r * per_round : (r + 1) * per_round], f"round {r + 1}: ")
        _print_capacity(points, "all: " if args.rounds > 1 else "")
        return 0
    for sessions in _list(args.sessions):
        same = [pt for pt in points if pt.sessions == sessions]
        if len(same) >= 2 and same[0].forwarded_pps > 0:
            print(f"{sessions} sessions: forwarded pkt/s, workers {same[-1].workers} / {same[0].workers}: "
                  f"{same[-1].forwarded_pps / same[0].forwarded_pps:.2f}")  # fmt: skip
    return 0


LOSS_FREE_PCT = 0.1


def _print_capacity(points: list[Point], prefix: str) -> None:
    """Capacity = the most packets forwarded per second at a loss-free point, per worker count: by the
    window's loss only, and with the load tool's own count (a longer window) loss-free too."""
    for label, strict in (("loss % <= 0.1", False), ("loss % and client loss % <= 0.1", True)):
        best: dict[int, Point] = {}
        for pt in points:
            clean = pt.loss_pct <= LOSS_FREE_PCT and (not strict or pt.client_loss_pct <= LOSS_FREE_PCT)
            if clean and pt.forwarded_pps > (best[pt.workers].forwarded_pps if pt.workers in best else 0):
                best[pt.workers] = pt
        one, two = best.get(1), best.get(2)
        text = ", ".join(f"{w} worker(s) {pt.forwarded_pps:.0f} ({pt.sessions} sessions)"
                         for w, pt in sorted(best.items()))  # fmt: skip
        ratio = f"; ratio {two.forwarded_pps / one.forwarded_pps:.2f}" if one and two else ""
        print(f"{prefix}capacity ({label}): {text or 'no loss-free point'}{ratio}")


if __name__ == "__main__":
    sys.exit(main())
