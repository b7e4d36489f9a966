from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.nethost import NetHost, unavailable_reason
from tests.support import Credentials, RunningServer, start_server

_net_host_index = itertools.count(11)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fails a test that leaves tasks running after its fixtures are torn down (STYLE.md: no leaks)."""
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    for _ in range(50):
        left = [t for t in asyncio.all_tasks() if t not in before and t is not current and not t.done()]
        if not left:
            return
        await asyncio.sleep(0.02)
    names = ", ".join(sorted(t.get_coro().__qualname__ for t in left))  # type: ignore[union-attr]
    for task in left:
        task.cancel()
    pytest.fail(f"test left {len(left)} task(s) running: {names}")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with start_server(tmp_path / "data") as running:
        yield running


@pytest.fixture
async def creds(server: RunningServer) -> Credentials:
    return await server.credentials()


@pytest.fixture
def net_host() -> Iterator[NetHost]:
    """A test host in a network namespace of its own (skips where namespaces cannot be made)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    host = NetHost.create(index=next(_net_host_index) % 250)
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
async def lan_server(tmp_path: Path, net_host: NetHost) -> AsyncIterator[RunningServer]:
    """The server, also listening and offering ICE candidates on the test host's gateway address."""
    async with start_server(
        tmp_path / "data", extra_listen=(net_host.gateway,), ice_hosts=("127.0.0.1", net_host.gateway)
    ) as running:
        yield running
