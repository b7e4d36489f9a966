"""Forwarding with `sfu serve --workers 1` vs `--workers 2`: many sessions of 1 publisher x N subscribers.

    python -m loadtest.bench_workers                       # 8 sessions of 1 x 20, 20 s, workers 1 then 2
    python -m loadtest.bench_workers --sessions 12 --subscribers 20 --duration 30 --workers 1,2

For each worker count a fresh server is spawned (`SFU_WORKERS`), then one `python -m loadtest` per session
starts at once against it (each its own session, so the front spreads them over the workers). Once the
server forwards to every subscriber (its `sfu_forwarders` gauge), this script measures one common window
of `--duration` seconds on the server's `/metrics` (the sum over workers): packets forwarded per second
and the CPU of all server processes. Loss comes from the subscribers' own reports (their windows lie
inside the common one). The clients run on the same machine: when it is saturated the figure measures
the machine, not the server; the table says how busy the machine was.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from loadtest.report import machine_busy_s
from loadtest.runner import parse_metrics
from loadtest.spawn import SpawnedServer

FEEDS_PER_PUBLISHER = 2  # VP8 + Opus
READY_TIMEOUT_S = 120.0
CLIENT_MARGIN_S = 10.0


@dataclass(frozen=True, slots=True)
class Point:
    workers: int
    sessions: int
    streams: int
    forwarded_pps: float
    loss_pct: float
    server_cpu_pct: float
    us_per_packet: float
    machine_cpu_pct: float
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


def run_point(workers: int, sessions: int, subscribers: int, duration_s: float) -> Point:
    streams = sessions * subscribers * FEEDS_PER_PUBLISHER
    os.environ["SFU_WORKERS"] = str(workers)
    try:
        with SpawnedServer() as server:
            run_s = duration_s + CLIENT_MARGIN_S  # each client's own window spans the common one
            cmd = [sys.executable, "-m", "loadtest", "--url", server.url, "--key-id", server.key_id,
                   "--secret", server.secret, "-p", "1", "-s", str(subscribers), "--duration", str(run_s),
                   "--json", "--quiet"]
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(sessions)]
            try:
                window = _measure(server.url, streams, duration_s)
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
    expected = sum(r["expected"] for r in reports)
    loss = 100.0 * sum(r["lost"] for r in reports) / expected if expected else float("nan")
    forwarded_pps, cpu_pct, busy_pct = window
    return Point(workers, sessions, streams, forwarded_pps, loss, cpu_pct,
                 cpu_pct * 1e4 / forwarded_pps if forwarded_pps else float("nan"), busy_pct,
                 sessions - len(reports))


def _measure(url: str, streams: int, duration_s: float) -> tuple[float, float, float]:
    """Waits for every forwarder, then (forwarded pkt/s, server CPU %, machine CPU %) over the window."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if _total(_metrics(url), "sfu_forwarders") >= streams:
            break
        time.sleep(1.0)
    else:
        print(f"bench_workers: not every stream is forwarded after {READY_TIMEOUT_S:.0f} s; measuring anyway",
              file=sys.stderr)
    time.sleep(3.0)  # key frames and NACK bursts of the last joins settle
    m0, busy0, t0 = _metrics(url), machine_busy_s(), time.monotonic()
    time.sleep(duration_s)
    m1, busy1, t1 = _metrics(url), machine_busy_s(), time.monotonic()
    span = t1 - t0
    packets = _total(m1, "sfu_packets_out_total") - _total(m0, "sfu_packets_out_total")
    cpu = _total(m1, "process_cpu_seconds_total") - _total(m0, "process_cpu_seconds_total")
    return packets / span, 100.0 * cpu / span, 100.0 * (busy1 - busy0) / span


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_workers", description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=8, help="concurrent sessions (one load run each)")
    p.add_argument("--subscribers", type=int, default=20, help="subscribers per session (1 publisher)")
    p.add_argument("--duration", type=float, default=20.0, help="common measurement window, seconds")
    p.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2")
    args = p.parse_args(argv)
    points = []
    for count in (int(v) for v in args.workers.split(",") if v.strip()):
        print(f"bench_workers: --workers {count}, {args.sessions} sessions of 1 x {args.subscribers}",
              file=sys.stderr, flush=True)
        points.append(run_point(count, args.sessions, args.subscribers, args.duration))
    print(f"python -m loadtest.bench_workers {' '.join(sys.argv[1:] if argv is None else argv)}")
    print("| workers | sessions | streams | forwarded pkt/s | loss % | server CPU % | CPU us/fwd pkt "
          "| machine CPU % | failed runs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pt in points:
        print(f"| {pt.workers} | {pt.sessions} | {pt.streams} | {pt.forwarded_pps:.0f} | {pt.loss_pct:.3f} | "
              f"{pt.server_cpu_pct:.0f} | {pt.us_per_packet:.1f} | "
              f"{pt.machine_cpu_pct:.0f} of {100 * (os.cpu_count() or 1)} | {pt.failed_runs} |")
    if len(points) >= 2 and points[0].forwarded_pps > 0:
        print(f"forwarded pkt/s, workers {points[-1].workers} / {points[0].workers}: "
              f"{points[-1].forwarded_pps / points[0].forwarded_pps:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
