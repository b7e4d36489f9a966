"""Clients, keys and webhooks in the SQLite store, and what master.key protects."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from sfu.auth.identity import Grants
from sfu.errors import BadRequest, Conflict, NotFound
from sfu.store.base import Store
from sfu.store.sqlite import SqliteStore


def raw_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.glob("sfu.db*"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_clients_are_created_found_and_listed(store: Store) -> None:
    acme = await store.create_client("acme")
    beta = await store.create_client("beta")
    assert acme.cid.startswith("c_") and acme.cid != beta.cid
    assert await store.get_client(acme.cid) == acme
    assert await store.find_client_by_name("beta") == beta
    assert await store.get_client("c_nope") is None
    assert [c.name for c in await store.list_clients()] == ["acme", "beta"]


async def test_a_client_name_is_unique(store: Store) -> None:
    await store.create_client("acme")
    with pytest.raises(Conflict, match="already exists"):
        await store.create_client("acme")


async def test_keys_need_an_existing_client(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.create_secret_key("c_missing")
    with pytest.raises(NotFound):
        await store.create_web_key("c_missing", ("https://example.com",), Grants())


async def test_a_secret_key_has_the_documented_shapes(store: Store) -> None:
    client = await store.create_client("acme")
    record, secret = await store.create_secret_key(client.cid)
    assert record.key_id.startswith("k_") and record.type == "secret" and record.algorithm == "HS256"
    assert secret is not None and secret.startswith("sk_") and len(secret) >= 40
    assert await store.key_secret(record.key_id) == secret.encode()
    assert await store.get_key(record.key_id) == record


async def test_a_web_key_is_found_by_its_value_only(store: Store) -> None:
    client = await store.create_client("acme")
    record, value = await store.create_web_key(
        client.cid, ("https://Example.com:443",), Grants(record=True), 3
    )
    assert value.startswith("wk_")
    assert record.origins == ("https://example.com",)
    assert await store.find_web_key(value) == record
    assert await store.find_web_key(value + "x") is None
    assert await store.key_secret(record.key_id) is None
    assert record.grants.record and record.max_participants == 3


@pytest.mark.parametrize(
    ("origins", "grants", "max_participants", "message"),
    [
        (("https://example.com/path",), Grants(), None, "path"),
        ((), Grants(), None, "at least one origin"),
        (("https://example.com",), Grants(admin=True), None, "cannot grant admin"),
        (("https://example.com",), Grants(), 0, "max_participants"),
    ],
)
async def test_web_key_creation_validates_its_fields(
    store: Store, origins: tuple[str, ...], grants: Grants, max_participants: int | None, message: str
) -> None:
    client = await store.create_client("acme")
    with pytest.raises(BadRequest, match=message):
        await store.create_web_key(client.cid, origins, grants, max_participants)


async def test_a_revoked_key_is_listed_as_revoked_and_has_no_secret(store: Store) -> None:
    client = await store.create_client("acme")
    record, _ = await store.create_secret_key(client.cid)
    web, value = await store.create_web_key(client.cid, ("https://example.com",), Grants())
    assert await store.revoke_key(record.key_id)
    assert await store.revoke_key(web.key_id)
    assert not await store.revoke_key(record.key_id)
    assert not await store.revoke_key("k_unknown")
    assert await store.key_secret(record.key_id) is None
    revoked_web = await store.find_web_key(value)
    assert revoked_web is not None and revoked_web.revoked
    assert [k.revoked for k in await store.list_keys(client.cid)] == [True, True]


async def test_keys_are_listed_per_client(store: Store) -> None:
    acme = await store.create_client("acme")
    beta = await store.create_client("beta")
    a, _ = await store.create_secret_key(acme.cid)
    b, _ = await store.create_secret_key(beta.cid)
    assert [k.key_id for k in await store.list_keys(acme.cid)] == [a.key_id]
    assert [k.key_id for k in await store.list_keys(beta.cid)] == [b.key_id]


def make_open_dir(path: Path) -> None:
    path.mkdir(mode=0o755)
    path.chmod(0o755)


async def test_the_data_dir_is_0700_and_master_key_and_database_0600(data_dir: Path) -> None:
    make_open_dir(data_dir)
    store = SqliteStore(data_dir)
    await store.open()
    await store.close()
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "master.key") == 0o600
    assert len((data_dir / "master.key").read_bytes()) == 32
    assert mode(data_dir / "sfu.db") == 0o600


async def test_a_new_data_dir_is_created_with_mode_0700(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a" / "b")
    await store.open()
    await store.close()
    assert mode(tmp_path / "a" / "b") == 0o700


@pytest.mark.sqlite_only
async def test_the_raw_database_holds_neither_the_secret_nor_the_web_key(
    store: Store, data_dir: Path
) -> None:
    client = await store.create_client("acme")
    _, secret = await store.create_secret_key(client.cid)
    _, value = await store.create_web_key(client.cid, ("https://example.com",), Grants())
    assert secret is not None
    await store.close()
    raw = raw_bytes(data_dir)
    assert b"acme" in raw  # the file is readable: the check below is meaningful
    assert secret.encode() not in raw and secret[3:].encode() not in raw
    assert value.encode() not in raw and value[3:].encode() not in raw


def tamper(data_dir: Path, sql: str, *params: object) -> None:
    db = sqlite3.connect(data_dir / "sfu.db")
    with db:
        db.execute(sql, params)
    db.close()


@pytest.mark.sqlite_only
async def test_an_edited_origins_row_makes_the_key_invalid(store: Store, data_dir: Path) -> None:
    client = await store.create_client("acme")
    record, value = await store.create_web_key(client.cid, ("https://example.com",), Grants())
    await store.close()
    tamper(data_dir, "UPDATE keys SET origins = ? WHERE key_id = ?", '["https://evil.net"]', record.key_id)
    await store.open()
    assert await store.find_web_key(value) is None
    assert await store.get_key(record.key_id) is None
    assert await store.list_keys(client.cid) == []


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("column", "new_value"),
    [
        (
            "grants",
            '{"publish":true,"subscribe":true,"data":true,"record":true,"admin":false,"hidden":true,'
            '"force_relay":false}',
        ),
        ("max_participants", 1000),
        ("revoked", 0),
        ("cid", "c_other"),
    ],
)
async def test_any_edit_of_a_signed_key_column_makes_the_key_invalid(
    store: Store, data_dir: Path, column: str, new_value: object
) -> None:
    client = await store.create_client("acme")
    other = await store.create_client("other")
    record, value = await store.create_web_key(client.cid, ("https://example.com",), Grants(), 5)
    await store.revoke_key(record.key_id)
    await store.close()
    if column == "cid":
        new_value = other.cid
    tamper(data_dir, f"UPDATE keys SET {column} = ? WHERE key_id = ?", new_value, record.key_id)
    await store.open()
    assert await store.find_web_key(value) is None


@pytest.mark.sqlite_only
async def test_a_secret_moved_to_another_key_row_does_not_decrypt(store: Store, data_dir: Path) -> None:
    client = await store.create_client("acme")
    a, _ = await store.create_secret_key(client.cid)
    b, _ = await store.create_secret_key(client.cid)
    await store.close()
    tamper(
        data_dir,
        "UPDATE keys SET secret_enc = (SELECT secret_enc FROM keys WHERE key_id = ?) WHERE key_id = ?",
        a.key_id,
        b.key_id,
    )
    await store.open()
    assert await store.key_secret(a.key_id) is not None
    assert await store.key_secret(b.key_id) is None


@pytest.mark.sqlite_only
async def test_a_copied_database_without_master_key_refuses_to_open(
    store: Store, data_dir: Path
) -> None:
    client = await store.create_client("acme")
    await store.create_secret_key(client.cid)
    await store.close()
    (data_dir / "master.key").unlink()
    with pytest.raises(RuntimeError, match=r"master\.key is missing"):
        await SqliteStore(data_dir).open()


@pytest.mark.sqlite_only
async def test_a_database_under_another_master_key_yields_no_usable_key(
    store: Store, data_dir: Path
) -> None:
    client = await store.create_client("acme")
    record, _ = await store.create_secret_key(client.cid)
    web, value = await store.create_web_key(client.cid, ("https://example.com",), Grants())
    await store.close()
    (data_dir / "master.key").write_bytes(b"\x01" * 32)
    await store.open()
    assert await store.key_secret(record.key_id) is None
    assert await store.find_web_key(value) is None
    assert await store.get_key(web.key_id) is None


async def test_webhooks_are_scoped_to_their_client(store: Store) -> None:
    acme = await store.create_client("acme")
    beta = await store.create_client("beta")
    key, _ = await store.create_secret_key(acme.cid)
    hook = await store.add_webhook(acme.cid, "https://hooks.example.com/sfu", key.key_id)
    assert hook.webhook_id.startswith("wh_")
    assert await store.list_webhooks(acme.cid) == [hook]
    assert await store.list_webhooks(beta.cid) == []
    assert not await store.delete_webhook(beta.cid, hook.webhook_id)
    assert await store.delete_webhook(acme.cid, hook.webhook_id)
    assert await store.list_webhooks(acme.cid) == []


async def test_a_webhook_needs_an_http_url_and_a_live_key_of_its_client(store: Store) -> None:
    acme = await store.create_client("acme")
    beta = await store.create_client("beta")
    key, _ = await store.create_secret_key(acme.cid)
    with pytest.raises(BadRequest, match="url"):
        await store.add_webhook(acme.cid, "ftp://x", key.key_id)
    with pytest.raises(BadRequest, match="key"):
        await store.add_webhook(beta.cid, "https://x.example.com", key.key_id)
    await store.revoke_key(key.key_id)
    with pytest.raises(BadRequest, match="key"):
        await store.add_webhook(acme.cid, "https://x.example.com", key.key_id)


def test_sqlite_store_implements_the_store_protocol(tmp_path: Path) -> None:
    store: Store = SqliteStore(tmp_path)  # mypy checks every method signature against the Protocol
    assert isinstance(store, SqliteStore)
