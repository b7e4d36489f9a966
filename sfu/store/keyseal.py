"""Key material and its protection under `master.key`, the same for every store.

`master.key` is 32 random bytes kept in the data directory, never in the store: HS256 secrets are sealed
with it (AES-GCM, a random 12-byte nonce in front, the key_id as associated data), web-only key values are
kept only as an HMAC under it, and every key record carries a MAC over what decides access (type,
algorithm, origins, grants, limits, public key, revoked). A store keeps these bytes as they come from here
and only decides where they live; a record whose MAC fails is treated as if it did not exist.

The byte formats here are what existing SQLite databases and Redis data hold: changing any of them (the
nonce layout, the HMAC labels, the MAC's JSON array) makes every stored key unusable.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from sfu.auth.identity import Grants
from sfu.auth.keys import normalize_origin_patterns
from sfu.errors import BadRequest
from sfu.store.base import KeyAlgorithm, KeyRecord, new_id

log = logging.getLogger("sfu.store")

MASTER_KEY_BYTES = 32
NONCE_BYTES = 12
ALGORITHMS: tuple[KeyAlgorithm, ...] = ("HS256", "ES256", "EdDSA")


def load_master_key(data_dir: Path, *, create: bool) -> bytes:
    """Reads `master.key`, creating it (mode 0600, 32 random bytes) only along with a new store."""
    path = data_dir / "master.key"
    if not create and not path.exists():
        raise RuntimeError(f"{path} is missing: the keys in {data_dir / 'sfu.db'} cannot be used without it")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_master_key(path)
    key = secrets.token_bytes(MASTER_KEY_BYTES)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def _read_master_key(path: Path) -> bytes:
    os.chmod(path, 0o600)
    key = path.read_bytes()
    if len(key) != MASTER_KEY_BYTES:
        raise RuntimeError(f"{path} is corrupt: expected {MASTER_KEY_BYTES} bytes, found {len(key)}")
    return key


def check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise BadRequest(f"algorithm must be one of {', '.join(ALGORITHMS)}")


def check_public_key(algorithm: KeyAlgorithm, pem: str) -> str:
    """The PEM if it is a public key usable with `algorithm`, else BadRequest."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise BadRequest("public key is not a PEM public key") from None
    if algorithm == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return pem
    if algorithm == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return pem
    raise BadRequest(f"public key does not fit algorithm {algorithm}")


class KeySeal:
    """Everything done with the master key: new key material and records, sealing, hashing, MACs."""

    def __init__(self, master: bytes) -> None:
        if len(master) != MASTER_KEY_BYTES:
            raise ValueError(f"a master key is {MASTER_KEY_BYTES} bytes, not {len(master)}")
        self._master = master
        self._aead = AESGCM(master)

    def master_check(self) -> bytes:
        """What a shared store keeps to recognize the master key (an HMAC under it, never the key)."""
        return hmac.new(self._master, b"sfu-master-check", hashlib.sha256).digest()

    # new keys

    def new_secret_key(
        self, cid: str, algorithm: KeyAlgorithm, public_key: str | None
    ) -> tuple[KeyRecord, str | None, bytes | None]:
        """(record, the HS256 secret to show once, the sealed secret to store); the last two are None
        for ES256 / EdDSA keys, whose public key is checked here."""
        check_algorithm(algorithm)
        key_id = new_id("k")
        secret: str | None = None
        sealed: bytes | None = None
        if algorithm == "HS256":
            if public_key is not None:
                raise BadRequest("an HS256 key has no public key")
            secret = "sk_" + secrets.token_urlsafe(32)
            sealed = self.seal(key_id, secret.encode())
        elif public_key is None:
            raise BadRequest(f"an {algorithm} key needs a public key (PEM)")
        else:
            public_key = check_public_key(algorithm, public_key)
        record = KeyRecord(key_id, cid, "secret", algorithm, public_key=public_key, created_at=time.time())
        return record, secret, sealed

    def new_web_key(
        self, cid: str, origins: tuple[str, ...], grants: Grants, max_participants: int | None
    ) -> tuple[KeyRecord, str, bytes]:
        """(record, the `wk_...` value to show once, its hash to store and look it up by)."""
        if grants.admin:
            raise BadRequest("a web-only key cannot grant admin")
        if max_participants is not None and (type(max_participants) is not int or max_participants < 1):
            raise BadRequest("max_participants must be a positive integer")
        origins = normalize_origin_patterns(origins)
        value = "wk_" + secrets.token_urlsafe(24)
        record = KeyRecord(new_id("k"), cid, "web_only", "HS256", origins, grants, max_participants,
                           created_at=time.time())
        return record, value, self.value_hash(value)

    # secrets and web-key values

    def seal(self, key_id: str, secret: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret, key_id.encode())

    def unseal(self, key_id: str, blob: bytes) -> bytes | None:
        """The secret sealed for `key_id`, or None (logged) if it does not open under this master key."""
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], key_id.encode())
        except (InvalidTag, ValueError):
            log.warning("secret of key %s does not decrypt with master.key; treated as invalid", key_id)
            return None

    def value_hash(self, value: str) -> bytes:
        return hmac.new(self._master, b"web-key\0" + value.encode(), hashlib.sha256).digest()

    # record integrity

    def mac(self, record: KeyRecord) -> bytes:
        """The MAC over what decides access (not created_at)."""
        signed = [record.key_id, record.cid, record.type, record.algorithm, list(record.origins),
                  record.grants.to_wire(), record.max_participants, record.public_key, record.revoked]
        return hmac.new(self._master, b"key-row\0" + orjson.dumps(signed), hashlib.sha256).digest()

    def open_record(self, key_id: str, read: Callable[[], tuple[Any, ...]], mac: bytes) -> KeyRecord | None:
        """The record if its MAC verifies, else None (logged): a tampered or unreadable entry is ignored.

        `read` decodes the store's entry into (cid, type, algorithm, origins list, grants object,
        max_participants, public_key, revoked, created_at); whatever it raises counts as tampering.
        """
        try:
            cid, type_, algorithm, origins, grants, max_participants, public_key, revoked, created_at = read()
            record = KeyRecord(key_id, cid, type_, algorithm, tuple(origins), Grants.from_wire(grants),
                               max_participants, public_key, bool(revoked), float(created_at))
            valid = hmac.compare_digest(self.mac(record), mac)
        except (KeyError, ValueError, TypeError, BadRequest):
            valid = False
        if not valid:
            log.warning("key %s fails its integrity check (edited outside the server?), ignored", key_id)
            return None
        return record
