"""Binary data channels through the server: messages/s and latency, 1 sender -> N receivers.

    .venv/bin/python -m loadtest.bench_datachannels [--receivers 10] [--seconds 4]

The whole server runs in this process on 127.0.0.1; the sender and the receivers (client_sdk sessions)
run in one spawned process, so the server's event loop is not shared with the peers'. Per row (lossy or
reliable, 100 B or 10 KiB):
- throughput: the sender sends as fast as the SDK lets it (reliable: `publish_data` waits on its
  channel's buffer; lossy: the bench pauses while the sender's lossy channel buffers over 256 KiB) for
  `--seconds`; we report the messages/s sent and delivered per receiver, and the share delivered;
- latency: then 100 messages paced at 50/s, each carrying its send time (CLOCK_MONOTONIC is shared by
  the processes of one machine); p50/p95/max from `publish_data` to the receiver's DataReceived event.
Prints a markdown table. Note what it measures: Python peers (aiortc SCTP) on both sides, one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import struct
import tempfile
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

STAMP = struct.Struct("!BQ")  # phase (0 throughput, 1 latency), send time in ns
ROWS = (("lossy", 100), ("lossy", 10 * 1024), ("reliable", 100), ("reliable", 10 * 1024))
LATENCY_MESSAGES = 100
LATENCY_RATE_HZ = 50


def peers_main(conn: Connection, url: str, tokens: list[str], seconds: float) -> None:
    asyncio.run(_peers(conn, url, tokens, seconds))


async def _peers(conn: Connection, url: str, tokens: list[str], seconds: float) -> None:
    import client_sdk
    from client_sdk import DataReceived

    sender = await client_sdk.connect(url, token=tokens[0], auto_subscribe=False)
    receivers = [await client_sdk.connect(url, token=t, auto_subscribe=False) for t in tokens[1:]]
    counts = [0] * len(receivers)
    latencies_ns: list[int] = []

    async def collect(index: int, session: client_sdk.Session) -> None:
        async for event in session.events():
            if isinstance(event, DataReceived):
                phase, sent_ns = STAMP.unpack_from(event.payload)
                if phase == 0:
                    counts[index] += 1
                else:
                    latencies_ns.append(time.monotonic_ns() - sent_ns)

    tasks = [asyncio.create_task(collect(i, s)) for i, s in enumerate(receivers)]
    try:
        await sender.publish_data(STAMP.pack(1, 0) + b"warm-up", reliable=True)
        await _wait(lambda: len(latencies_ns) == len(receivers))
        await asyncio.sleep(1.0)  # let the lossy channels open too
        latencies_ns.clear()
        rows = []
        for mode, size in ROWS:
            rows.append(await _row(conn, sender, counts, latencies_ns, mode == "reliable", size, seconds))
        conn.send(("rows", rows))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for session in [sender, *receivers]:
            await session.close()


async def _wait(predicate: Any, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("peers did not get ready")
        await asyncio.sleep(0.05)


async def _quiet(grows: list[int], still_s: float = 0.5) -> None:
    """Waits until nothing more arrives (the previous phase drained), so phases do not overlap."""
    last = -1
    while (now := sum(grows) + len(grows)) != last:
        last = now
        await asyncio.sleep(still_s)


async def _row(
    conn: Connection, sender: Any, counts: list[int], latencies_ns: list[int], reliable: bool, size: int,
    seconds: float,
) -> dict[str, Any]:
    for i in range(len(counts)):
        counts[i] = 0
    latencies_ns.clear()
    filler = bytes(size - STAMP.size)
    sent = 0
    conn.send(("start", None))
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        await sender.publish_data(STAMP.pack(0, time.monotonic_ns()) + filler, reliable=reliable)
        sent += 1
        lossy = sender._data._lossy
        if not reliable and lossy is not None and lossy.bufferedAmount > 256 * 1024:
            await asyncio.sleep(0.001)
        elif sent % 16 == 0:
            await asyncio.sleep(0)
    elapsed = time.monotonic() - start
    conn.send(("end", None))
    if reliable:
        await _wait(lambda: min(counts) >= sent, within_s=120)
    await _quiet(counts)
    delivered = sum(counts) / len(counts)
    latencies_ns.clear()
    for _ in range(LATENCY_MESSAGES):
        await sender.publish_data(STAMP.pack(1, time.monotonic_ns()) + filler, reliable=reliable)
        await asyncio.sleep(1 / LATENCY_RATE_HZ)
    await _quiet(latencies_ns)
    ms = sorted(x / 1e6 for x in latencies_ns)
    return {
        "mode": "reliable" if reliable else "lossy",
        "size": size,
        "sent_per_s": sent / elapsed,
        "delivered_per_s": delivered / elapsed,
        "delivered_share": delivered / sent if sent else 0.0,
        "p50_ms": statistics.median(ms) if ms else float("nan"),
        "p95_ms": ms[int(len(ms) * 0.95) - 1] if ms else float("nan"),
        "max_ms": ms[-1] if ms else float("nan"),
        "latency_samples": len(ms),
    }


async def run(receivers: int, seconds: float) -> list[dict[str, Any]]:
    from aiohttp import web

    from sfu.app import build_app
    from sfu.auth.tokens import create_token
    from sfu.config import Config
    from sfu.media.datachannels import TOTALS
    from sfu.server import SERVER_KEY

    with tempfile.TemporaryDirectory() as data_dir:
        config = replace(Config(), host="127.0.0.1", port=0, data_dir=Path(data_dir),
                         ice_hosts=("127.0.0.1",), log_level="warning")
        app = await build_app(config)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = int(runner.addresses[0][1])
            store = app[SERVER_KEY].store
            client = await store.create_client("bench")
            key, secret = await store.create_secret_key(client.cid)
            assert secret is not None
            tokens = [create_token(key_id=key.key_id, secret=secret, sid="bench", uid=f"u{i}")
                      for i in range(receivers + 1)]
            ctx = multiprocessing.get_context("spawn")
            parent_conn, child_conn = ctx.Pipe()
            url = f"http://127.0.0.1:{port}"
            peers = ctx.Process(target=peers_main, args=(child_conn, url, tokens, seconds), daemon=True)
            peers.start()
            cpu: list[float] = []  # server CPU seconds over each throughput window
            started = (0.0, 0.0)
            try:
                while True:
                    while not parent_conn.poll():
                        if not peers.is_alive():
                            raise RuntimeError("peers process died")
                        await asyncio.sleep(0.01)
                    kind, body = parent_conn.recv()
                    if kind == "start":
                        started = (time.process_time(), time.monotonic())
                    elif kind == "end":
                        cpu.append((time.process_time() - started[0]) / (time.monotonic() - started[1]))
                    else:
                        rows: list[dict[str, Any]] = body
                        break
            finally:
                peers.join(10)
                if peers.is_alive():
                    peers.kill()
                    peers.join()
            for row, share in zip(rows, cpu, strict=True):
                row["server_cpu"] = share
            rows[-1]["server_drops"] = sum(TOTALS.drops)
            return rows
        finally:
            await runner.cleanup()


def table(rows: list[dict[str, Any]], receivers: int) -> str:
    lines = [
        f"| mode | payload | sent msg/s | delivered msg/s per receiver ({receivers}) | delivered | "
        "server CPU | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        size = f"{r['size']} B" if r["size"] < 1024 else f"{r['size'] // 1024} KiB"
        lines.append(
            f"| {r['mode']} | {size} | {r['sent_per_s']:.0f} | {r['delivered_per_s']:.0f} | "
            f"{r['delivered_share']:.1%} | {r['server_cpu']:.0%} | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--receivers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.receivers, args.seconds))
    print(table(rows, args.receivers))


if __name__ == "__main__":
    main()
