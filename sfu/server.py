"""The root of the object tree: one Server per process owns the store, auth, sessions and media engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from sfu.auth.authenticator import Authenticator
from sfu.config import Config
from sfu.media.engine import MediaEngine
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

    @classmethod
    async def create(cls, config: Config, store: Store | None = None) -> Server:
        if store is None:
            store = SqliteStore(config.data_dir, retention_days=config.message_retention_days)
        await store.open()
        auth = Authenticator(store)
        webhooks = WebhookSender(store)
        media = MediaEngine(ice_hosts=config.ice_hosts)
        registry = Registry(config, store, webhooks, media)

        def add_media(session: Session) -> None:
            SessionMedia(session, media)  # it registers itself as the session's observer

        registry.on_session_created.append(add_media)
        return cls(config, store, auth, webhooks, media, registry)

    async def close(self) -> None:
        """Ends every session, then the media engine, the webhook queue and the store, in that order."""
        await self.registry.close()
        await self.media.close()
        await self.webhooks.close()
        await self.store.close()


SERVER_KEY = web.AppKey("server", Server)
