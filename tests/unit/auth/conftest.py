from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sfu.auth.authenticator import Authenticator
from sfu.auth.identity import Grants
from sfu.store.base import Store
from tests import store_backends

NOW = 1_800_000_000.0


@dataclass(slots=True)
class Keys:
    """One client with a live HS256 secret key and a web-only key, plus an Authenticator at `NOW`."""

    store: Store
    auth: Authenticator
    cid: str
    key_id: str
    secret: str
    web_key: str
    web_key_id: str


def pytest_configure(config: pytest.Config) -> None:
    store_backends.configure(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    store_backends.parametrize_store(metafunc)  # every key check against SQLite and against Redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    yield from store_backends.redis_url_fixture()


@pytest.fixture
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with store_backends.open_store(request.param, tmp_path / "data", request) as store:
        yield store


@pytest.fixture
async def keys(store: Store) -> Keys:
    client = await store.create_client("acme")
    key, secret = await store.create_secret_key(client.cid)
    assert secret is not None
    web, web_key = await store.create_web_key(
        client.cid,
        ("https://*.example.com", "http://localhost:8000"),
        Grants(record=True),
        max_participants=8,
    )
    return Keys(
        store, Authenticator(store, clock=lambda: NOW), client.cid, key.key_id, secret, web_key, web.key_id
    )
