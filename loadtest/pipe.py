"""Awaiting a multiprocessing pipe from an event loop without a thread: wait for readability, then read."""

from __future__ import annotations

import asyncio
import os
from multiprocessing.connection import Connection
from typing import Any


async def recv(conn: Connection, timeout_s: float | None = None) -> Any:
    """The next object from `conn`; TimeoutError after `timeout_s`, EOFError if the other end died."""
    if not conn.poll():
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = conn.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            async with asyncio.timeout(timeout_s):
                await ready
        finally:
            loop.remove_reader(fd)
            # NOTE: uvloop (libuv) leaves a watched fd non-blocking; a large `send` on this duplex pipe
            # would then fail half-written. Blocking mode is what multiprocessing expects.
            os.set_blocking(fd, True)
    return conn.recv()
