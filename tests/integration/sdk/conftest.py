"""Fixtures for SDK tests: sessions that are always closed, and a TCP proxy that can drop connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import client_sdk
from sfu.signaling.ws import DISPATCHER_KEY
from tests.support import RunningServer


class Sessions:
    """Opens SDK sessions and closes every one of them at teardown, whatever the test did."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._opened: list[client_sdk.Session] = []

    async def connect(self, url: str | None = None, **options: Any) -> client_sdk.Session:
        session = client_sdk.Session(url or self.url, **options)
        self._opened.append(session)
        await session.join()
        return session

    async def close_all(self) -> None:
        for session in self._opened:
            await session.close()


@pytest.fixture
async def sessions(server: RunningServer) -> AsyncIterator[Sessions]:
    opened = Sessions(server.url)
    try:
        yield opened
    finally:
        await opened.close_all()


class TcpProxy:
    """127.0.0.1 proxy in front of the server; `drop()` aborts every connection open through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""
        self.connections = 0
        self.refusing = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    def drop(self) -> None:
        """Aborts both sides of every open connection, like a network path going away."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def proxy(server: RunningServer) -> AsyncIterator[TcpProxy]:
    running = TcpProxy(server.port)
    await running.start()
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def media_server(server: RunningServer) -> AsyncIterator[RunningServer]:
    """The server, or a skip naming why: media tests need its publish/subscribe handlers."""
    if "publish" not in server.app[DISPATCHER_KEY].routes_by_type:
        pytest.skip("server has no media yet (no publish handler registered)")
    yield server
