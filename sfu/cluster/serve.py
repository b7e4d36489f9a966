"""`sfu serve --workers N` (N > 1): the front process's life from start to SIGTERM.

Order: listen, start the workers (each ready on its internal port), create the demo credentials, print
the banner. SIGTERM/SIGINT: SIGTERM to every worker, which ends its sessions (`server_shutdown`, 1001,
relayed to the clients) and finalizes its recordings; then the front stops. SIGUSR1 drains: the front's
/healthz answers 503 and every worker refuses new joins. A second SIGTERM exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from sfu.app import WEB_ROOT
from sfu.cluster.front import Front, PlacementFactory, build_front_app
from sfu.cluster.supervisor import WorkerPool
from sfu.config import Config, ConfigError
from sfu.store.base import Store
from sfu.store.sqlite import SqliteStore

log = logging.getLogger("sfu.cluster")

STOP_MARGIN_S = 10.0
"""Beyond `shutdown_timeout_s`, what workers get to finalize recordings before they are killed."""


async def serve_cluster(config: Config, count: int, ssl_context: ssl.SSLContext | None,
                        print_banner: Callable[[dict[str, Any], Config], None],
                        placement_factory: PlacementFactory | None = None) -> None:
    from sfu.bootstrap import ensure_demo

    redis_node = None
    store: Store
    if config.redis_url:  # one node of many (docs/scaling.md): shared store and placement in Redis
        from sfu.cluster.redis_front import RedisNode, open_store

        store = open_store(config)
        redis_node = RedisNode(config, store)
        placement_factory = redis_node.placement_factory
    else:
        store = SqliteStore(config.data_dir, retention_days=config.message_retention_days)
    await store.open()
    interrupted = await store.interrupt_recordings()  # no worker runs yet: these were cut by a crash
    if interrupted:
        log.warning("%d recording(s) were cut short by the previous run; marked interrupted", interrupted)
    try:
        pool = WorkerPool(config, count, store)
    except ValueError as exc:
        await store.close()
        raise ConfigError(str(exc)) from None
    front = Front(config, store, pool, placement_factory)
    app = build_front_app(front, config.web_root or WEB_ROOT)
    if redis_node is not None:
        redis_node.install(app, front)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_timeout_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            where = f"{config.host}:{config.port}"
            raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        config = replace(config, port=int(runner.addresses[0][1]))
        await pool.start()
        if redis_node is not None:
            await redis_node.start(config)
        demo = await ensure_demo(store, config)
        print_banner(demo.to_json(), config)
        print(f"workers        {count} (pids {' '.join(str(w.pid) for w in pool.workers)})", flush=True)
        await _until_stopped(front, pool)
        print("sfu: shutting down", flush=True)
        front.closing = True
        await pool.stop(config.shutdown_timeout_s + STOP_MARGIN_S)
    finally:
        await pool.stop(STOP_MARGIN_S)
        if redis_node is not None:
            await redis_node.close()
        await runner.cleanup()
        await front.close()
        await store.close()


async def _until_stopped(front: Front, pool: WorkerPool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_stop() -> None:
        pool.stopping = True  # a worker that got the same SIGINT (a terminal's Ctrl-C) is not restarted
        if stop.is_set():
            print("sfu: second signal, exiting at once", file=sys.stderr, flush=True)
            pool.signal_all(signal.SIGKILL)
            os._exit(1)
        stop.set()

    def on_drain() -> None:
        front.draining = True
        pool.signal_all(signal.SIGUSR1)
        print("sfu: draining: new joins are refused, /healthz answers 503", flush=True)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop)
    loop.add_signal_handler(signal.SIGUSR1, on_drain)
    await stop.wait()
