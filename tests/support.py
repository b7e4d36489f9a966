"""Shared test helpers: an in-process server on an ephemeral port, credentials, and wait_until."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from sfu.app import build_app
from sfu.auth.identity import Grants
from sfu.auth.tokens import create_token
from sfu.config import Config
from sfu.server import SERVER_KEY, Server


@dataclass(frozen=True, slots=True)
class Credentials:
    cid: str
    key_id: str
    secret: str
    web_key: str
    origin: str

    def token(self, sid: str, uid: str, **claims: Any) -> str:
        """A join JWT for (sid, uid); keyword arguments go to `create_token` (grants, policy, name...)."""
        return create_token(key_id=self.key_id, secret=self.secret, sid=sid, uid=uid, **claims)

    def admin_token(self) -> str:
        return create_token(
            key_id=self.key_id, secret=self.secret, sid=None, uid=None, grants={"admin": True}
        )


@dataclass(slots=True)
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    ws_url: str  # ws://127.0.0.1:PORT/v1/rtc
    port: int
    app: web.Application
    config: Config

    @property
    def server(self) -> Server:
        return self.app[SERVER_KEY]

    async def credentials(
        self, origin: str = "http://127.0.0.1:8000", web_grants: Grants | None = None, **web_kwargs: Any
    ) -> Credentials:
        store = self.server.store
        client = await store.create_client(f"test-{time.monotonic_ns()}")
        key, secret = await store.create_secret_key(client.cid)
        assert secret is not None
        _, web_key = await store.create_web_key(
            client.cid, (origin,), web_grants or Grants(record=True), **web_kwargs
        )
        return Credentials(client.cid, key.key_id, secret, web_key, origin)


def test_config(data_dir: Path, **overrides: Any) -> Config:
    base = Config(host="127.0.0.1", port=0, data_dir=data_dir, ice_hosts=("127.0.0.1",), log_level="warning")
    return replace(base, **overrides)


@asynccontextmanager
async def start_server(
    data_dir: Path, extra_listen: tuple[str, ...] = (), **overrides: Any
) -> AsyncIterator[RunningServer]:
    """The whole server in this process, on an ephemeral port of 127.0.0.1 (and of `extra_listen`)."""
    config = test_config(data_dir, **overrides)
    app = await build_app(config)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        addresses = runner.addresses
        port = int(addresses[0][1])
        for host in extra_listen:
            await web.TCPSite(runner, host, port).start()
        yield RunningServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/rtc", port, app, config)
    finally:
        await runner.cleanup()


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float = 5.0, interval: float = 0.02
) -> None:
    """Polls `predicate` until it is true; fails with a clear message after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: {predicate}")
        await asyncio.sleep(interval)
