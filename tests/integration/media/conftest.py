from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from sfu.media.engine import MediaEngine
from tests.integration.media.peers import LOOPBACK, ClientPeer


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    engine = MediaEngine(ice_hosts=LOOPBACK)
    yield engine
    await engine.close()


@pytest.fixture
async def new_client() -> AsyncIterator[Callable[[], ClientPeer]]:
    clients: list[ClientPeer] = []

    def make() -> ClientPeer:
        client = ClientPeer()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
