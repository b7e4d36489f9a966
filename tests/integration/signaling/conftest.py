from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.signaling.peers import Peers, open_peers
from tests.support import RunningServer


@pytest.fixture
async def peers(server: RunningServer) -> AsyncIterator[Peers]:
    async with open_peers(server) as opened:
        yield opened
