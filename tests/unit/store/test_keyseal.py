"""The byte formats of sfu/store/keyseal.py, pinned: every SQLite database and Redis store written so far
holds these exact bytes, so a change to a label, the MAC's array or the nonce layout must fail here.
The expected values were computed by the stores' own code before it moved into KeySeal."""

from __future__ import annotations

import pytest

from sfu.auth.identity import Grants
from sfu.errors import BadRequest
from sfu.store.base import KeyRecord
from sfu.store.keyseal import KeySeal

MASTER = bytes(range(32))
SEAL = KeySeal(MASTER)

WEB = KeyRecord("k_0123456789abcdef", "c_00112233aabbccdd", "web_only", "HS256",
                ("https://a.example", "https://*.b.example"),
                Grants.from_wire({"publish": ["camera"], "subscribe": True}), 5, None, False, 1700000000.5)
REVOKED = KeyRecord("k_fedcba9876543210", "c_00112233aabbccdd", "secret", "HS256", revoked=True,
                    created_at=1700000001.0)
# nonce of zeros + AES-GCM("sk_golden", aad=REVOKED.key_id) under MASTER
SEALED = bytes.fromhex("0000000000000000000000007dd7eab9da40e7d866311d74325c5ebca838132e122489c009")


def test_the_key_mac_is_the_stored_format() -> None:
    assert SEAL.mac(WEB).hex() == "66f071f6f8880421484c2c9b3ce0a0f4b6ddd6ddb8cbf627b98b3e8bec8681cc"
    assert SEAL.mac(REVOKED).hex() == "da655e389cbba3c02de00044187788b196fee0e692d4223de030ebe2acb238f2"


def test_the_master_check_kept_in_redis_is_the_stored_format() -> None:
    assert SEAL.master_check().hex() == "26fb33a6bb3333105a539e69d07fbf0de038b47e55b84299cadc78dab48d975e"
    assert KeySeal(bytes(32)).master_check() != SEAL.master_check()


def test_the_web_key_value_hash_is_the_stored_format() -> None:
    assert SEAL.value_hash("wk_test-value").hex() == (
        "d90cb87f5509f68cdf0ba0717005f605d17ae1b516a30bf6a5fbc9bf349b6da1")


def test_a_stored_sealed_secret_opens_for_its_key_id_only() -> None:
    assert SEAL.unseal(REVOKED.key_id, SEALED) == b"sk_golden"
    assert SEAL.unseal(WEB.key_id, SEALED) is None
    assert KeySeal(bytes(32)).unseal(REVOKED.key_id, SEALED) is None
    assert SEAL.unseal(REVOKED.key_id, b"") is None


def test_seal_then_unseal_round_trips_with_a_fresh_nonce() -> None:
    a, b = SEAL.seal("k_1", b"secret"), SEAL.seal("k_1", b"secret")
    assert a != b and a[12:] != b[12:]
    assert SEAL.unseal("k_1", a) == SEAL.unseal("k_1", b) == b"secret"


def fields(record: KeyRecord) -> tuple[object, ...]:
    return (record.cid, record.type, record.algorithm, list(record.origins), record.grants.to_wire(),
            record.max_participants, record.public_key, record.revoked, record.created_at)


def test_open_record_verifies_the_mac_and_rejects_any_change() -> None:
    mac = SEAL.mac(WEB)
    assert SEAL.open_record(WEB.key_id, lambda: fields(WEB), mac) == WEB
    widened = (*fields(WEB)[:3], ["*"], *fields(WEB)[4:])
    assert SEAL.open_record(WEB.key_id, lambda: widened, mac) is None
    assert SEAL.open_record("k_other", lambda: fields(WEB), mac) is None
    assert KeySeal(bytes(32)).open_record(WEB.key_id, lambda: fields(WEB), mac) is None


def test_open_record_treats_an_unreadable_entry_as_tampered() -> None:
    def broken() -> tuple[object, ...]:
        raise KeyError("row")

    assert SEAL.open_record(WEB.key_id, broken, SEAL.mac(WEB)) is None
    assert SEAL.open_record(WEB.key_id, lambda: fields(WEB)[:5], SEAL.mac(WEB)) is None
    bad_grants = (*fields(WEB)[:4], {"nope": True}, *fields(WEB)[5:])
    assert SEAL.open_record(WEB.key_id, lambda: bad_grants, SEAL.mac(WEB)) is None


def test_new_keys_check_their_input() -> None:
    with pytest.raises(BadRequest, match="algorithm"):
        SEAL.new_secret_key("c_1", "RS256", None)  # type: ignore[arg-type]
    with pytest.raises(BadRequest, match="no public key"):
        SEAL.new_secret_key("c_1", "HS256", "pem")
    with pytest.raises(BadRequest, match="needs a public key"):
        SEAL.new_secret_key("c_1", "ES256", None)
    with pytest.raises(BadRequest, match="admin"):
        SEAL.new_web_key("c_1", ("https://a.example",), Grants(admin=True), None)
    with pytest.raises(BadRequest, match="max_participants"):
        SEAL.new_web_key("c_1", ("https://a.example",), Grants(), 0)


def test_new_keys_come_with_what_the_store_keeps() -> None:
    record, secret, sealed = SEAL.new_secret_key("c_1", "HS256", None)
    assert secret is not None and secret.startswith("sk_") and sealed is not None
    assert SEAL.unseal(record.key_id, sealed) == secret.encode()
    web, value, value_hash = SEAL.new_web_key("c_1", ("https://A.example:443",), Grants(), 2)
    assert value.startswith("wk_") and value_hash == SEAL.value_hash(value)
    assert web.origins == ("https://a.example",) and web.max_participants == 2


def test_a_master_key_is_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeySeal(b"short")
