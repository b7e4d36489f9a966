"""First-start demo credentials: created once, the same on every later start, replaced when unusable."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from sfu.auth.authenticator import Authenticator
from sfu.auth.tokens import create_token
from sfu.bootstrap import CREDENTIALS_FILE, ensure_demo
from sfu.config import Config
from sfu.store.sqlite import SqliteStore


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(port=7999, data_dir=tmp_path / "data")


@pytest.fixture
async def store(config: Config) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(config.data_dir)
    await store.open()
    yield store
    await store.close()


def read_file(config: Config) -> dict[str, object]:
    data = orjson.loads((config.data_dir / CREDENTIALS_FILE).read_bytes())
    assert isinstance(data, dict)
    return data


def file_mode(config: Config) -> int:
    return stat.S_IMODE((config.data_dir / CREDENTIALS_FILE).stat().st_mode)


async def test_first_start_creates_working_demo_credentials(store: SqliteStore, config: Config) -> None:
    demo = await ensure_demo(store, config)
    client = await store.find_client_by_name("demo")
    assert client is not None and demo.cid == client.cid
    assert demo.origins == ("http://127.0.0.1:7999", "http://localhost:7999")
    assert demo.url == "http://127.0.0.1:7999/"
    auth = Authenticator(store)
    token = create_token(key_id=demo.key_id, secret=demo.secret, sid="demo", uid="u1")
    assert (await auth.verify_token(token)).cid == demo.cid
    identity = await auth.verify_web_key(
        demo.web_key, "http://localhost:7999", sid="demo", uid="u2", name=None
    )
    assert identity.grants.record and identity.key_id == demo.web_key_id


async def test_the_credentials_file_is_private_and_complete(store: SqliteStore, config: Config) -> None:
    demo = await ensure_demo(store, config)
    assert file_mode(config) == 0o600
    assert read_file(config) == demo.to_json()


async def test_later_starts_return_the_same_credentials(store: SqliteStore, config: Config) -> None:
    first = await ensure_demo(store, config)
    await store.close()
    await store.open()
    again = await ensure_demo(store, config)
    assert again == first
    assert len(await store.list_keys(first.cid)) == 2


async def test_a_revoked_demo_secret_key_is_replaced(store: SqliteStore, config: Config) -> None:
    first = await ensure_demo(store, config)
    await store.revoke_key(first.key_id)
    again = await ensure_demo(store, config)
    assert again.key_id != first.key_id and again.web_key == first.web_key
    assert read_file(config)["key_id"] == again.key_id


async def test_a_new_port_gets_a_new_web_key_and_the_old_one_is_revoked(
    store: SqliteStore, config: Config
) -> None:
    first = await ensure_demo(store, config)
    moved = await ensure_demo(store, Config(port=8123, data_dir=config.data_dir))
    assert moved.web_key != first.web_key and moved.key_id == first.key_id
    assert moved.origins == ("http://127.0.0.1:8123", "http://localhost:8123")
    old = await store.find_web_key(first.web_key)
    assert old is not None and old.revoked


async def test_a_lost_credentials_file_means_new_keys_for_the_same_client(
    store: SqliteStore, config: Config
) -> None:
    first = await ensure_demo(store, config)
    (config.data_dir / CREDENTIALS_FILE).unlink()
    again = await ensure_demo(store, config)
    assert again.cid == first.cid and again.key_id != first.key_id and again.web_key != first.web_key


async def test_a_specific_listen_address_is_an_allowed_origin_too(store: SqliteStore, config: Config) -> None:
    demo = await ensure_demo(store, Config(host="192.0.2.10", port=7999, data_dir=config.data_dir))
    assert "http://192.0.2.10:7999" in demo.origins and demo.url == "http://192.0.2.10:7999/"
