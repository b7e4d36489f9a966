from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sfu.store.base import Store
from tests import store_backends


def pytest_configure(config: pytest.Config) -> None:
    store_backends.configure(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    store_backends.parametrize_store(metafunc)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    yield from store_backends.redis_url_fixture()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def store(request: pytest.FixtureRequest, data_dir: Path) -> AsyncIterator[Store]:
    """The store under test: SQLite, or Redis (see tests/store_backends.py)."""
    async with store_backends.open_store(request.param, data_dir, request) as store:
        yield store
