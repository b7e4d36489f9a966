from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sfu.auth.authenticator import Authenticator
from sfu.auth.identity import Grants
from sfu.store.sqlite import SqliteStore

NOW = 1_800_000_000.0


@dataclass(slots=True)
class Keys:
    """One client with a live HS256 secret key and a web-only key, plus an Authenticator at `NOW`."""

    store: SqliteStore
    auth: Authenticator
    cid: str
    key_id: str
    secret: str
    web_key: str
    web_key_id: str


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "data")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def keys(store: SqliteStore) -> Keys:
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
