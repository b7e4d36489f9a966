"""`python -m loadtest`: P publishers x S subscribers against a server, a report table, and sweeps.

    python -m loadtest --spawn -p 1 -s 10 --duration 20
    python -m loadtest --url http://127.0.0.1:7880 --key-id K --secret S -p 2 -s 20
    python -m loadtest --spawn --sweep subscribers=1,10,50 --out loadtest-results
    python -m loadtest --spawn -p 10 -s 300 --video none          # audio only
    python -m loadtest --spawn -p 2 -s 5 --compare-aiortc-relay  # the same load against aiortc's relay
    python -m loadtest --spawn -p 1 -s 20 --subscriber-path aiortc  # subscribers receive through aiortc

Progress goes to stderr; the table (or one JSON object with `--json`) to stdout. With `--sweep`, a JSON
file and a PNG plot (CPU per forwarded packet and loss vs the swept count) are written to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadtest.report import Report, details, machine, machine_busy_s, table
from loadtest.runner import LoadConfig, run_load
from loadtest.spawn import SpawnedRelay, SpawnedServer
from loadtest.worker import PUBLISHER_PATHS, SUBSCRIBER_PATHS, MediaSpec

SWEEPABLE = ("subscribers", "publishers")
TARGETS = ("sfu", "aiortc-relay")


def _bitrate(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def _sweep(text: str) -> tuple[str, list[int]]:
    name, _, values = text.partition("=")
    if name not in SWEEPABLE or not values:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(SWEEPABLE)}=N,N,...")
    return name, [int(v) for v in values.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest", description=__doc__.splitlines()[0] if __doc__ else None
    )
    target = p.add_argument_group("server")
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:7880")
    target.add_argument("--key-id", help="a secret key's key_id (signs the participants' tokens)")
    target.add_argument("--secret", help="that key's secret")
    target.add_argument(
        "--spawn", action="store_true", help="start `sfu serve` on a free port (temp data dir)"
    )
    target.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="with --spawn: one more `sfu serve` argument (repeatable), e.g. --server-arg=--workers=1",
    )
    target.add_argument(
        "--target",
        choices=TARGETS,
        default="sfu",
        help="sfu: pysfu; aiortc-relay: spawn loadtest/aiortc_relay.py (decode, MediaRelay, re-encode)",
    )
    target.add_argument(
        "--compare-aiortc-relay",
        action="store_true",
        help="run every point against pysfu, then the same load against a spawned aiortc relay",
    )
    load = p.add_argument_group("load")
    load.add_argument("-p", "--publishers", type=int, default=1)
    load.add_argument(
        "--sessions",
        type=int,
        default=1,
        help="run N sessions of -p x -s at once from the same load workers (pysfu only)",
    )
    load.add_argument("-s", "--subscribers", type=int, default=1)
    load.add_argument("--duration", type=float, default=20.0, help="measurement window, seconds")
    load.add_argument("--warmup", type=float, default=2.0, help="seconds after every stream has packets")
    load.add_argument("--workers", type=int, default=0, help="worker processes (0: one per 25 subscribers)")
    load.add_argument(
        "--sweep", type=_sweep, metavar="NAME=N,N,..", help="subscribers=1,10,50 or publishers=.."
    )
    media = p.add_argument_group("media (pre-encoded, cached)")
    media.add_argument("--width", type=int, default=640)
    media.add_argument("--height", type=int, default=360)
    media.add_argument("--fps", type=int, default=30)
    media.add_argument("--bitrate", type=_bitrate, default=800_000, help="VP8 target, e.g. 800k, 1.5m")
    media.add_argument("--keyframe-interval", type=float, default=2.0, help="seconds between key frames")
    media.add_argument("--audio", choices=("opus", "none"), default="opus")
    media.add_argument("--video", choices=("vp8", "none"), default="vp8", help="none: audio only")
    media.add_argument(
        "--talkers",
        type=int,
        default=0,
        metavar="K",
        help="only publishers 0..K-1 talk; the others send one Opus packet per 400 ms (DTX silence)",
    )
    load.add_argument(
        "--connect-muted",
        action="store_true",
        help="pysfu: publishers stay muted until every subscriber is connected (fast setup of big runs)",
    )
    load.add_argument(
        "--subscriber-path",
        choices=SUBSCRIBER_PATHS,
        default="socket",
        help="socket: count RTP headers at the UDP socket before SRTP unprotect (cheap, default); "
        "kernel: an nftables rule counts and drops subscribers' media before any socket (~free; needs root "
        "and nft, server on this machine; no latency, loss from sent vs counted); "
        "aiortc: unprotect + parse every packet through client_sdk's raw feed (the SDK's receive path)",
    )
    load.add_argument(
        "--publisher-path",
        choices=PUBLISHER_PATHS,
        default="raw",
        help="raw: send pre-packetized RTP from one pacer per worker process (cheap, default); "
        "aiortc: hand the clip to aiortc's RTCRtpSender (the SDK's send path)",
    )
    load.add_argument(
        "--udp-buffer",
        type=_bitrate,
        default=2 * 1024 * 1024,
        metavar="BYTES",
        help="SO_RCVBUF of the workers' ICE sockets, e.g. 2m (Linux caps it at net.core.rmem_max)",
    )
    load.add_argument(
        "--ping-interval",
        type=float,
        default=25.0,
        metavar="S",
        help="each session's signaling ping (default 25 s: the protocol's keepalive, not what this tool "
        "measures; the SDK's default is 10 s; the server closes a socket silent for 30 s)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    out.add_argument("--out", type=Path, default=Path("loadtest-results"), help="directory for sweep files")
    out.add_argument("--quiet", action="store_true", help="no progress lines")
    out.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="PCT",
        help="before each run, wait (max 5 min) until the machine is below PCT%% CPU busy",
    )
    return p


def _config(args: argparse.Namespace, url: str, key_id: str, secret: str) -> LoadConfig:
    media = MediaSpec(
        args.width, args.height, args.fps, args.bitrate, args.keyframe_interval, args.audio == "opus",
        video=args.video == "vp8", talkers=args.talkers,
    )  # fmt: skip
    return LoadConfig(url, key_id, secret, args.publishers, args.subscribers, args.duration, args.warmup,
                      args.workers, media, udp_buffer_bytes=args.udp_buffer,
                      connect_muted=args.connect_muted,
                      subscriber_path=args.subscriber_path,
                      publisher_path=args.publisher_path, sessions=args.sessions,
                      ping_interval_s=args.ping_interval)  # fmt: skip


def run_points(args: argparse.Namespace, overrides: dict[str, Any]) -> list[Report]:
    """One point against --target, or against pysfu and then the aiortc relay (--compare-aiortc-relay)."""
    targets = ["sfu", "aiortc-relay"] if args.compare_aiortc_relay else [args.target]
    return [run_point(args, {**overrides, "target": target}) for target in targets]


def run_point(args: argparse.Namespace, overrides: dict[str, Any]) -> Report:
    """One run; with --spawn a fresh server per run, so RSS and CPU belong to this load alone."""
    progress = None if args.quiet else _stderr
    if args.wait_idle > 0:
        wait_idle(args.wait_idle, progress or (lambda _line: None))
    if overrides.get("target", args.target) == "aiortc-relay":
        with SpawnedRelay() as relay:
            config = replace(_config(args, relay.url, relay.key_id, relay.secret), **overrides)
            return asyncio.run(run_load(config, progress))
    if args.spawn:
        with SpawnedServer(args.server_arg) as server:
            config = replace(_config(args, server.url, server.key_id, server.secret), **overrides)
            return asyncio.run(run_load(config, progress))
    config = replace(_config(args, args.url, args.key_id, args.secret), **overrides)
    return asyncio.run(run_load(config, progress))


def wait_idle(limit_pct: float, say: Callable[[str], None], within_s: float = 300.0) -> None:
    """On a shared machine other work distorts the numbers: start when it is quiet (or give up)."""
    deadline = time.monotonic() + within_s
    busy_pct = math.nan
    while time.monotonic() < deadline:
        busy0, t0 = machine_busy_s(), time.monotonic()
        time.sleep(3.0)
        busy_pct = 100 * (machine_busy_s() - busy0) / (time.monotonic() - t0)
        if busy_pct < limit_pct:
            say(f"loadtest: machine {busy_pct:.0f}% busy, starting")
            return
    say(f"loadtest: machine still {busy_pct:.0f}% busy after {within_s:.0f} s, starting anyway")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    needs_sfu = args.target == "sfu" or args.compare_aiortc_relay
    if needs_sfu and not args.spawn and not (args.url and args.key_id and args.secret):
        print("loadtest: error: give --spawn, or --url with --key-id and --secret", file=sys.stderr)
        return 2
    command = "python -m loadtest " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.sweep is None:
        reports = run_points(args, {})
        if args.json:
            body = [r.to_json() for r in reports]
            print(json.dumps({"machine": machine(), "command": command, "report": body[0], "reports": body}))
        else:
            print(table(reports))
            for report in reports:
                print(details(report))
        return 0 if not any(r.errors for r in reports) else 1
    name, values = args.sweep
    reports = [r for value in values for r in run_points(args, {name: value})]
    written = write_sweep(args.out, name, command, reports)
    print(table(reports))
    for report in reports:
        print(f"{name}={getattr(report, name)}: {details(report)}")
    memory = per_subscriber_bytes([r for r in reports if r.target == "sfu"])
    if memory is not None:
        print(f"server RSS per subscriber (first to last point): {memory / 1e6:.2f} MB")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def per_subscriber_bytes(reports: list[Report]) -> float | None:
    """RSS slope between the first and last point of a subscriber sweep (each with a fresh server)."""
    if len(reports) < 2 or reports[-1].subscribers == reports[0].subscribers:
        return None
    rss = reports[-1].server_rss_bytes - reports[0].server_rss_bytes
    return rss / (reports[-1].subscribers - reports[0].subscribers) / max(reports[0].publishers, 1)


def write_sweep(out: Path, name: str, command: str, reports: list[Report]) -> list[Path]:
    """`sweep-<name>-<time>.json` and `.png` in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"sweep-{name}-{time.strftime('%Y%m%dT%H%M%S')}"
    body: dict[str, Any] = {"machine": machine(), "command": command, "swept": name,
                            "points": [r.to_json() for r in reports],
                            "rss_per_subscriber_bytes": per_subscriber_bytes(
                                [r for r in reports if r.target == "sfu"])}  # fmt: skip
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(body, indent=2))
    png_path = stem.with_suffix(".png")
    plot(reports, name, png_path)
    return [json_path, png_path]


def plot(reports: list[Report], name: str, path: Path) -> None:
    """CPU us per forwarded packet and loss % against the swept count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cpu_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for target in dict.fromkeys(r.target for r in reports):  # one line per server (--compare-aiortc-relay)
        points = [r for r in reports if r.target == target]
        xs = [getattr(r, name) for r in points]
        label = "pysfu" if target == "sfu" else target
        cpu_ax.plot(xs, [r.server_cpu_us_per_packet for r in points], marker="o", label=label)
        loss_ax.plot(xs, [r.loss_pct for r in points], marker="o", label=label)
    cpu_ax.set(xlabel=name, ylabel="server CPU us per forwarded packet", title="CPU per packet")
    cpu_ax.set_ylim(bottom=0)
    if len({r.target for r in reports}) > 1:
        cpu_ax.legend()
        loss_ax.legend()
    loss_ax.set(xlabel=name, ylabel="loss %", title="loss at subscribers")
    loss_ax.set_ylim(bottom=0)
    for ax in (cpu_ax, loss_ax):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
