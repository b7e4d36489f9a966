"""ES256 and EdDSA keys: the client keeps the private key, the server holds only the registered public key."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sfu.errors import BadRequest, Unauthorized
from tests.unit.auth.conftest import NOW, Keys

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def public_pem(private: PrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(key_id: str, **extra: Any) -> dict[str, Any]:
    return {"iss": key_id, "sub": "bot-1", "sid": "room", "iat": int(NOW), "exp": int(NOW) + 300, **extra}


@pytest.mark.parametrize(
    ("algorithm", "private"),
    [("ES256", ec.generate_private_key(ec.SECP256R1())), ("EdDSA", ed25519.Ed25519PrivateKey.generate())],
)
async def test_a_token_signed_with_the_registered_key_pair_verifies(
    keys: Keys, algorithm: str, private: PrivateKey
) -> None:
    record, secret = await keys.store.create_secret_key(keys.cid, algorithm, public_pem(private))  # type: ignore[arg-type]
    assert secret is None
    assert record.algorithm == algorithm and record.public_key == public_pem(private)
    assert await keys.store.key_secret(record.key_id) is None
    token = jwt.encode(
        claims(record.key_id, grants={"hidden": True}),
        private,
        algorithm=algorithm,
        headers={"kid": record.key_id},
    )
    identity = await keys.auth.verify_token(token)
    assert (identity.uid, identity.key_id, identity.grants.hidden) == ("bot-1", record.key_id, True)


async def test_a_token_signed_with_another_private_key_is_rejected(keys: Keys) -> None:
    registered = ec.generate_private_key(ec.SECP256R1())
    record, _ = await keys.store.create_secret_key(keys.cid, "ES256", public_pem(registered))
    intruder = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(record.key_id), intruder, algorithm="ES256", headers={"kid": record.key_id})
    with pytest.raises(Unauthorized, match="signature is invalid"):
        await keys.auth.verify_token(token)


async def test_hs256_signed_with_the_public_key_is_rejected(keys: Keys) -> None:
    """The classic key-confusion attack: the public PEM used as an HMAC secret."""
    private = ec.generate_private_key(ec.SECP256R1())
    record, _ = await keys.store.create_secret_key(keys.cid, "ES256", public_pem(private))
    header = {"alg": "HS256", "kid": record.key_id, "typ": "JWT"}
    signing = jwt.api_jws.PyJWS()
    forged = signing.encode(
        json.dumps({"iss": record.key_id, "sub": "x", "sid": "y", "exp": int(NOW) + 60}).encode(),
        key=b"irrelevant-hmac-key-which-is-long-enough-0123456789",
        algorithm="HS256",
        headers=header,
    )
    with pytest.raises(Unauthorized, match="algorithm does not match"):
        await keys.auth.verify_token(forged)


async def test_an_es256_token_for_an_eddsa_key_is_rejected(keys: Keys) -> None:
    record, _ = await keys.store.create_secret_key(
        keys.cid, "EdDSA", public_pem(ed25519.Ed25519PrivateKey.generate())
    )
    token = jwt.encode(
        claims(record.key_id),
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": record.key_id},
    )
    with pytest.raises(Unauthorized, match="algorithm does not match"):
        await keys.auth.verify_token(token)


@pytest.mark.parametrize(
    ("algorithm", "pem"),
    [
        ("ES256", public_pem(ed25519.Ed25519PrivateKey.generate())),
        ("ES256", public_pem(ec.generate_private_key(ec.SECP384R1()))),
        ("EdDSA", public_pem(ec.generate_private_key(ec.SECP256R1()))),
        ("ES256", public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))),
        ("ES256", "not a pem"),
    ],
)
async def test_a_public_key_that_does_not_fit_the_algorithm_is_refused(
    keys: Keys, algorithm: str, pem: str
) -> None:
    with pytest.raises(BadRequest, match="public key"):
        await keys.store.create_secret_key(keys.cid, algorithm, pem)  # type: ignore[arg-type]


async def test_an_asymmetric_key_needs_a_public_key_and_hs256_takes_none(keys: Keys) -> None:
    with pytest.raises(BadRequest, match="needs a public key"):
        await keys.store.create_secret_key(keys.cid, "ES256")
    with pytest.raises(BadRequest, match="no public key"):
        await keys.store.create_secret_key(
            keys.cid, "HS256", public_pem(ec.generate_private_key(ec.SECP256R1()))
        )
