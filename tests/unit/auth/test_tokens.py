"""Minting tokens: the claims and header of PROTOCOL.md, and early errors for what the server refuses."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from sfu.auth.authenticator import Authenticator
from sfu.auth.tokens import check_times, create_token, read_header
from sfu.cli import main
from sfu.errors import BadRequest, Unauthorized
from tests.unit.auth.conftest import NOW, Keys


def test_create_token_writes_the_protocol_claims_and_kid() -> None:
    secret = "sk_" + "a" * 43
    token = create_token(
        key_id="k_1",
        secret=secret,
        sid="room",
        uid="alice",
        ttl_s=120,
        name="Alice",
        description={"a": 1},
        grants={"publish": False},
        policy={"subscribe": ["b*"]},
        now=NOW,
    )
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "k_1", "typ": "JWT"}
    claims = jwt.decode(
        token,
        secret,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims == {
        "iss": "k_1",
        "sub": "alice",
        "sid": "room",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 120,
        "name": "Alice",
        "description": {"a": 1},
        "grants": {"publish": False},
        "policy": {"subscribe": ["b*"]},
    }


def test_create_token_accepts_the_secret_as_bytes() -> None:
    secret = "sk_" + "b" * 43
    a = create_token(key_id="k", secret=secret, sid="s", uid="u", now=NOW)
    b = create_token(key_id="k", secret=secret.encode(), sid="s", uid="u", now=NOW)
    assert a == b


def test_an_admin_token_may_leave_out_sub_and_sid() -> None:
    token = create_token(
        key_id="k", secret="sk_" + "c" * 43, sid=None, uid=None, grants={"admin": True}, now=NOW
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert "sub" not in claims and "sid" not in claims and claims["grants"] == {"admin": True}


@pytest.mark.parametrize("ttl", [0, -1, 24 * 3600 + 1])
def test_a_ttl_the_server_would_refuse_fails_when_minting(ttl: float) -> None:
    with pytest.raises(BadRequest, match="ttl"):
        create_token(key_id="k", secret="s" * 40, sid="s", uid="u", ttl_s=ttl)


def test_unknown_grants_fail_when_minting() -> None:
    with pytest.raises(BadRequest, match="unknown grant"):
        create_token(key_id="k", secret="s" * 40, sid="s", uid="u", grants={"fly": True})


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_read_header_refuses_none_in_any_case(alg: str) -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "kid": "k"}).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized, match="none"):
        read_header(f"{header}.e30.")


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ({"exp": NOW + 10}, True),
        ({"exp": NOW - 29}, True),
        ({"exp": NOW - 31}, False),
        ({"exp": NOW + 60, "nbf": NOW + 29}, True),
        ({"exp": NOW + 60, "nbf": NOW + 31}, False),
        ({"exp": NOW + 60, "iat": NOW + 31}, False),
        ({"exp": NOW + 86400, "iat": NOW}, True),
        ({"exp": NOW + 86401, "iat": NOW}, False),
        ({"exp": True}, False),
        ({}, False),
    ],
)
def test_time_rules_follow_the_table(claims: dict[str, float], ok: bool) -> None:
    if ok:
        assert check_times(claims, NOW) == claims["exp"]
    else:
        with pytest.raises(Unauthorized):
            check_times(claims, NOW)


async def test_sfu_token_create_output_verifies_with_the_authenticator(
    keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "token",
        "create",
        "--key",
        keys.key_id,
        "--secret",
        keys.secret,
        "--session",
        "standup",
        "--uid",
        "carol",
        "--ttl",
        "10m",
        "--name",
        "Carol",
        "--description",
        '{"team":"red"}',
        "--grant",
        "publish=camera,screen",
        "--grant",
        "data=false",
        "--policy-subscribe",
        "a*",
        "--policy-message",
        "b*",
    ]
    assert main(argv) == 0
    token = capsys.readouterr().out.strip()
    identity = await Authenticator(keys.store).verify_token(token)
    assert (identity.sid, identity.uid, identity.name, identity.description) == (
        "standup",
        "carol",
        "Carol",
        {"team": "red"},
    )
    assert identity.grants.publish == ("camera", "screen") and not identity.grants.data
    assert identity.policy.subscribe == ("a*",) and identity.policy.message == ("b*",)


async def test_sfu_token_create_admin_output_passes_verify_admin(
    keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "create", "--key", keys.key_id, "--secret", keys.secret, "--admin"]) == 0
    token = capsys.readouterr().out.strip()
    identity = await Authenticator(keys.store).verify_admin(f"Bearer {token}")
    assert identity.grants.admin and identity.cid == keys.cid
