from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sfu.store.sqlite import SqliteStore


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def store(data_dir: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(data_dir)
    await store.open()
    yield store
    await store.close()
