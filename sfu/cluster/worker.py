"""One worker process: the whole single-process server (sfu.app) on an internal loopback port.

Started by the front's WorkerPool as `python -m sfu.cluster.worker` with `(Config, index)` pickled on
stdin. Prints `READY <port>` on stdout once listening, then only logs (stderr). Adds one internal route,
`GET /cluster/load`, which the front polls. SIGTERM/SIGINT shut down exactly like `sfu serve` (sessions
end with `server_shutdown`, recordings are finalized); SIGUSR1 drains.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import pickle
import signal
import sys
import time
from typing import Any

from aiohttp import web

from sfu import gc_tuning
from sfu.config import Config
from sfu.server import SERVER_KEY, Server
from sfu.store.base import Store
from sfu.store.sqlite import SqliteStore

PR_SET_PDEATHSIG = 1
LOG_FORMAT = "%(asctime)s %(levelname)s {name} %(name)s %(message)s"


class WorkerStore(SqliteStore):
    """The shared SQLite store as a worker uses it: recordings cut short by a crash are marked by the
    front (it knows which worker wrote which), never by a worker starting while others are recording."""

    async def interrupt_recordings(self) -> int:
        return 0


def open_worker_store(config: Config) -> Store:
    """The node's shared store: SQLite in the data dir, or Redis for a node of many (`--redis`)."""
    if config.redis_url:
        from sfu.cluster.redis_front import WorkerRedisStore

        return WorkerRedisStore(config.redis_url, config.data_dir,
                                retention_days=config.message_retention_days)
    return WorkerStore(config.data_dir, retention_days=config.message_retention_days)


class LoadMeter:
    """CPU and forwarded packets/s since the previous reading (the front polls about once a second)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._last = (time.monotonic(), time.process_time(), self._forwarded())

    def _forwarded(self) -> int:
        return sum(f.packets for t in self.server.media.transports for f in getattr(t, "forwarders", ()))

    def read(self, *, peek: bool = False) -> dict[str, Any]:
        """`peek`: without starting a new measuring interval (someone other than the poller asks)."""
        now, cpu, packets = time.monotonic(), time.process_time(), self._forwarded()
        last_now, last_cpu, last_packets = self._last
        if not peek:
            self._last = (now, cpu, packets)
        elapsed = max(now - last_now, 1e-3)
        registry = self.server.registry
        return {
            "cpu": (cpu - last_cpu) / elapsed,
            "pps": max(packets - last_packets, 0) / elapsed,
            "participants": registry.participant_count,
            "sessions": [list(key) for key in registry.sessions_by_key],
            "draining": registry.draining,
        }


async def serve(config: Config, index: int) -> None:
    from sfu.app import build_app
    from sfu.signaling.rest_recordings import RECORDINGS_KEY

    app = await build_app(config, open_worker_store(config))
    server = app[SERVER_KEY]
    meter = LoadMeter(server)

    async def load(request: web.Request) -> web.Response:
        body = meter.read(peek="peek" in request.query)
        recordings = app[RECORDINGS_KEY].recordings_by_id.values()
        body["recordings"] = [[r.session.cid, r.recording_id] for r in recordings if r.state == "recording"]
        return web.json_response(body)

    app.router.add_get("/cluster/load", load)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_timeout_s,
                           access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, 0)
        await site.start()
        port = int(runner.addresses[0][1])
        print(f"READY {port}", flush=True)
        if not config.default_gc:
            gc_tuning.tune()
        os.dup2(2, 1)  # nothing more on the pipe the front stopped reading
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, server.registry.drain)
        await stop.wait()
        server.registry.drain()
    finally:
        await runner.cleanup()


def _die_with_parent() -> None:
    """Linux: die with the front. A front killed with SIGKILL takes its workers along as a single process
    would go: no worker outlives it (holding ports and the pipes of whoever started the front), and the
    next start marks their recordings interrupted. SIGTERM to the front stops the workers gracefully."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the front died before the prctl
        os._exit(1)


def main() -> None:
    _die_with_parent()
    config, index = pickle.loads(sys.stdin.buffer.read())
    assert isinstance(config, Config) and isinstance(index, int)
    logging.basicConfig(level=config.log_level.upper(), format=LOG_FORMAT.format(name=f"worker-{index}"))
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(config, index))


if __name__ == "__main__":
    main()
