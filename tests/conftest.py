from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import Credentials, RunningServer, start_server


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
