"""The store fixtures' backends: every store test runs against SQLite and against Redis (a private
redis-server for the test session, a fresh key prefix per test). Tests marked `sqlite_only` reach into
the SQLite file and run against it alone."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from sfu.store.base import Store
from sfu.store.redis import RedisStore
from sfu.store.sqlite import SqliteStore
from tests.redis_server import redis_missing, redis_server

BACKENDS = ("sqlite", "redis")


def configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: uses the SQLite file itself; not run against Redis")


def parametrize_store(metafunc: pytest.Metafunc) -> None:
    """`store` (indirect) gets both backends, or SQLite alone under `@pytest.mark.sqlite_only`."""
    if "store" in metafunc.fixturenames:
        only_sqlite = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("store", ["sqlite"] if only_sqlite else list(BACKENDS), indirect=True)


def redis_url_fixture() -> Iterator[str]:
    why = redis_missing()
    if why is not None:
        pytest.skip(why)
    with redis_server() as server:
        yield server.url


@asynccontextmanager
async def open_store(backend: str, data_dir: Path, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    store: SqliteStore | RedisStore
    if backend == "redis":
        url: str = request.getfixturevalue("redis_url")
        store = RedisStore(url, data_dir, prefix=f"test-{secrets.token_hex(6)}:")
    else:
        store = SqliteStore(data_dir)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
