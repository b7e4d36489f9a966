"""The root of the object tree: one Server per process owns the store, auth, sessions and media engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from sfu.auth.authenticator import Authenticator
from sfu.config import Config
from sfu.media.bridge import IceNetwork
from sfu.media.engine import MediaEngine
from sfu.session.admission import CPU_SAMPLE_INTERVAL_S
from sfu.session.registry import Registry
from sfu.session.session import Session
from sfu.session.session_media import SessionMedia
from sfu.signaling.webhooks import WebhookSender
from sfu.store.base import Store
from sfu.store.sqlite import SqliteStore

log = logging.getLogger("sfu.server")


@dataclass(slots=True, eq=False)
class Server:
    config: Config
    store: Store
    auth: Authenticator
    webhooks: WebhookSender
    media: MediaEngine
    registry: Registry
    housekeeping_interval_s: float = 3600.0
    _housekeeping: asyncio.Task[None] | None = field(default=None, repr=False)
    _cpu_sampling: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    async def create(cls, config: Config, store: Store | None = None) -> Server:
        if store is None:
            store = SqliteStore(config.data_dir, retention_days=config.message_retention_days)
        await store.open()
        auth = Authenticator(store)
        webhooks = WebhookSender(store)
        network = IceNetwork(config.rtc_port_range, config.public_ips, config.udp_buffer_bytes)
        media = MediaEngine(ice_hosts=config.ice_hosts, ice_network=network)
        registry = Registry(config, store, webhooks, media)

        def add_media(session: Session) -> None:
            SessionMedia(session, media)  # it registers itself as the session's observer

        registry.on_session_created.append(add_media)
        server = cls(config, store, auth, webhooks, media, registry)
        server._housekeeping = asyncio.create_task(server._run_housekeeping(), name="housekeeping")
        if registry.max_cpu is not None:
            server._cpu_sampling = asyncio.create_task(server._sample_cpu(), name="cpu-sampling")
        return server

    async def _sample_cpu(self) -> None:
        """`max_worker_cpu` in a single process: the registry refuses new sessions on this reading."""
        while True:
            await asyncio.sleep(CPU_SAMPLE_INTERVAL_S)
            self.registry.cpu_meter.sample(time.monotonic(), time.process_time())

    async def _run_housekeeping(self) -> None:
        """Drops data messages past retention (the store caps each pipeline at 1000 on append)."""
        while True:
            try:
                dropped = await self.store.prune_messages(int(time.time() * 1000))
                if dropped:
                    log.info("pruned %d data messages past retention", dropped)
            except Exception:
                log.exception("pruning data messages failed")
            await asyncio.sleep(self.housekeeping_interval_s)

    async def close(self) -> None:
        """Ends every session, then the media engine, the webhook queue and the store, in that order."""
        for task in (self._housekeeping, self._cpu_sampling):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._housekeeping = self._cpu_sampling = None
        await self.registry.close()
        await self.media.close()
        await self.webhooks.close()
        await self.store.close()


SERVER_KEY = web.AppKey("server", Server)
