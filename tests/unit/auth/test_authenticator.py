"""Every JWT rule of PROTOCOL.md "Credentials", each checked with a really signed token."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from sfu.auth.authenticator import Authenticator
from sfu.auth.identity import Grants, Policy
from sfu.auth.tokens import create_token
from sfu.errors import BadRequest, Forbidden, Unauthorized
from tests.unit.auth.conftest import NOW, Keys


def claims_for(keys: Keys, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": keys.key_id,
        "sub": "alice-1",
        "sid": "standup",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 600,
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def sign(
    keys: Keys,
    claims: dict[str, Any],
    *,
    secret: str | None = None,
    kid: str | None = None,
    alg: str = "HS256",
) -> str:
    return jwt.encode(
        claims,
        (secret or keys.secret).encode(),
        algorithm=alg,
        headers={"kid": kid if kid is not None else keys.key_id},
    )


def b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


async def test_a_valid_join_token_gives_the_identity_it_describes(keys: Keys) -> None:
    claims = claims_for(
        keys,
        name="Alice",
        description={"role": "host"},
        grants={"publish": ["camera"], "record": True},
        policy={"subscribe": ["bob-*"]},
    )
    identity = await keys.auth.verify_token(sign(keys, claims))
    assert (identity.cid, identity.key_id, identity.via) == (keys.cid, keys.key_id, "jwt")
    assert (identity.uid, identity.sid, identity.name) == ("alice-1", "standup", "Alice")
    assert identity.description == {"role": "host"}
    assert identity.grants == Grants(publish=("camera",), record=True)
    assert identity.policy == Policy(subscribe=("bob-*",))
    assert identity.expires_at == NOW + 600


async def test_a_token_minted_by_plain_pyjwt_from_the_protocol_claims_verifies(keys: Keys) -> None:
    token = jwt.encode(
        {
            "iss": keys.key_id,
            "sub": "bob",
            "sid": "room-1",
            "iat": int(NOW),
            "exp": int(NOW) + 3600,
            "grants": {"publish": False, "subscribe": True},
        },
        keys.secret,
        "HS256",
        headers={"kid": keys.key_id},
    )
    identity = await keys.auth.verify_token(token)
    assert identity.uid == "bob"
    assert not identity.grants.can_publish("camera")


async def test_create_token_output_verifies(keys: Keys) -> None:
    token = create_token(
        key_id=keys.key_id,
        secret=keys.secret,
        sid="s",
        uid="u",
        now=NOW,
        name="U",
        grants={"data": False},
        policy={"message": ["a*"]},
        description={"x": 1},
    )
    identity = await keys.auth.verify_token(token)
    assert (identity.sid, identity.uid, identity.name, identity.description) == ("s", "u", "U", {"x": 1})
    assert not identity.grants.data
    assert identity.policy.allows_message("ab") and not identity.policy.allows_message("b")


async def test_alg_none_is_rejected(keys: Keys) -> None:
    token = f"{b64({'alg': 'none', 'kid': keys.key_id, 'typ': 'JWT'})}.{b64(claims_for(keys))}."
    with pytest.raises(Unauthorized, match="algorithm none"):
        await keys.auth.verify_token(token)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_an_algorithm_other_than_the_keys_is_rejected(keys: Keys) -> None:
    token = sign(keys, claims_for(keys), alg="HS512")
    with pytest.raises(Unauthorized, match="algorithm does not match"):
        await keys.auth.verify_token(token)


async def test_a_token_without_kid_is_rejected(keys: Keys) -> None:
    token = jwt.encode(claims_for(keys), keys.secret.encode(), algorithm="HS256")
    with pytest.raises(Unauthorized, match="no kid"):
        await keys.auth.verify_token(token)


async def test_an_unknown_kid_is_rejected(keys: Keys) -> None:
    token = sign(keys, claims_for(keys, iss="k_unknown"), kid="k_unknown")
    with pytest.raises(Unauthorized, match="no known key"):
        await keys.auth.verify_token(token)


async def test_a_web_only_key_id_cannot_sign_tokens(keys: Keys) -> None:
    token = sign(keys, claims_for(keys, iss=keys.web_key_id), kid=keys.web_key_id)
    with pytest.raises(Unauthorized, match="no known key"):
        await keys.auth.verify_token(token)


async def test_an_iss_other_than_the_kid_is_rejected(keys: Keys) -> None:
    other, secret = await keys.store.create_secret_key(keys.cid)
    assert secret is not None
    token = sign(keys, claims_for(keys, iss=other.key_id))
    with pytest.raises(Unauthorized, match="iss does not match"):
        await keys.auth.verify_token(token)


async def test_a_missing_iss_is_rejected(keys: Keys) -> None:
    with pytest.raises(Unauthorized, match="iss"):
        await keys.auth.verify_token(sign(keys, claims_for(keys, iss=None)))


async def test_a_revoked_key_stops_working_at_once(keys: Keys) -> None:
    token = sign(keys, claims_for(keys))
    assert (await keys.auth.verify_token(token)).uid == "alice-1"
    assert await keys.store.revoke_key(keys.key_id)
    with pytest.raises(Unauthorized, match="revoked"):
        await keys.auth.verify_token(token)


async def test_a_bad_signature_is_rejected(keys: Keys) -> None:
    token = sign(keys, claims_for(keys), secret="sk_not-the-right-secret-at-all-0123456789")
    with pytest.raises(Unauthorized, match="signature is invalid"):
        await keys.auth.verify_token(token)


async def test_an_edited_payload_breaks_the_signature(keys: Keys) -> None:
    header, _, signature = sign(keys, claims_for(keys)).split(".")
    forged = f"{header}.{b64(claims_for(keys, grants={'admin': True}))}.{signature}"
    with pytest.raises(Unauthorized, match="signature is invalid"):
        await keys.auth.verify_token(forged)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "...."])
async def test_malformed_tokens_are_rejected(keys: Keys, token: str) -> None:
    with pytest.raises(Unauthorized):
        await keys.auth.verify_token(token)


async def test_a_token_without_exp_is_rejected(keys: Keys) -> None:
    with pytest.raises(Unauthorized, match="no exp"):
        await keys.auth.verify_token(sign(keys, claims_for(keys, exp=None)))


async def test_an_expired_token_is_rejected(keys: Keys) -> None:
    token = sign(keys, claims_for(keys, iat=int(NOW) - 600, nbf=int(NOW) - 600, exp=int(NOW) - 31))
    with pytest.raises(Unauthorized, match="expired"):
        await keys.auth.verify_token(token)


async def test_a_token_expired_within_the_leeway_still_verifies(keys: Keys) -> None:
    token = sign(keys, claims_for(keys, iat=int(NOW) - 600, nbf=int(NOW) - 600, exp=int(NOW) - 20))
    assert (await keys.auth.verify_token(token)).uid == "alice-1"


async def test_a_non_numeric_exp_is_rejected(keys: Keys) -> None:
    with pytest.raises(Unauthorized, match="exp must be a number"):
        await keys.auth.verify_token(sign(keys, claims_for(keys, exp="tomorrow")))


async def test_a_future_nbf_beyond_the_leeway_is_rejected(keys: Keys) -> None:
    with pytest.raises(Unauthorized, match="nbf"):
        await keys.auth.verify_token(sign(keys, claims_for(keys, nbf=int(NOW) + 31)))


async def test_a_future_nbf_within_the_leeway_is_accepted(keys: Keys) -> None:
    assert (await keys.auth.verify_token(sign(keys, claims_for(keys, nbf=int(NOW) + 25)))).sid == "standup"


async def test_a_future_iat_beyond_the_leeway_is_rejected(keys: Keys) -> None:
    with pytest.raises(Unauthorized, match="iat is in the future"):
        await keys.auth.verify_token(sign(keys, claims_for(keys, iat=int(NOW) + 60, nbf=None)))


async def test_a_lifetime_over_24_hours_is_rejected(keys: Keys) -> None:
    token = sign(keys, claims_for(keys, exp=int(NOW) + 24 * 3600 + 1))
    with pytest.raises(Unauthorized, match="24 h"):
        await keys.auth.verify_token(token)


async def test_a_lifetime_of_exactly_24_hours_is_accepted(keys: Keys) -> None:
    assert (await keys.auth.verify_token(sign(keys, claims_for(keys, exp=int(NOW) + 24 * 3600)))).uid


async def test_without_iat_the_lifetime_counts_from_now(keys: Keys) -> None:
    token = sign(keys, claims_for(keys, iat=None, nbf=None, exp=int(NOW) + 25 * 3600))
    with pytest.raises(Unauthorized, match="24 h"):
        await keys.auth.verify_token(token)


@pytest.mark.parametrize("claim", ["sub", "sid"])
async def test_a_join_token_needs_sub_and_sid(keys: Keys, claim: str) -> None:
    with pytest.raises(Unauthorized, match=f"no {claim}"):
        await keys.auth.verify_token(sign(keys, claims_for(keys, **{claim: None})))


@pytest.mark.parametrize("claim", ["sub", "sid"])
@pytest.mark.parametrize("value", ["", "has space", "x" * 129, "slash/no", "ünïcode", 42])
async def test_sub_and_sid_must_follow_the_identifier_rule(keys: Keys, claim: str, value: object) -> None:
    with pytest.raises(Unauthorized, match=f"{claim} must be 1-128"):
        await keys.auth.verify_token(sign(keys, claims_for(keys, **{claim: value})))


async def test_identifiers_may_use_every_allowed_character(keys: Keys) -> None:
    uid = "A-z_0.9:x@y" + "a" * 117
    assert len(uid) == 128
    assert (await keys.auth.verify_token(sign(keys, claims_for(keys, sub=uid)))).uid == uid


@pytest.mark.parametrize("description", [["a"], "text", 5, True])
async def test_a_description_must_be_an_object(keys: Keys, description: object) -> None:
    with pytest.raises(Unauthorized, match="description must be an object"):
        await keys.auth.verify_token(sign(keys, claims_for(keys, description=description)))


async def test_a_description_over_4_kib_is_rejected(keys: Keys) -> None:
    description = {"bio": "x" * 4096}
    with pytest.raises(Unauthorized, match="4 KiB"):
        await keys.auth.verify_token(sign(keys, claims_for(keys, description=description)))


async def test_a_description_of_exactly_4_kib_is_accepted(keys: Keys) -> None:
    description = {"bio": "x" * (4096 - len('{"bio":""}'))}
    identity = await keys.auth.verify_token(sign(keys, claims_for(keys, description=description)))
    assert identity.description == description


@pytest.mark.parametrize(
    ("grants", "message"),
    [
        ({"superpowers": True}, "unknown grant"),
        ({"publish": "yes"}, "must be a boolean"),
        ({"publish": ["camera", "hologram"]}, "unknown source"),
        ({"admin": 1}, "must be a boolean"),
        (["publish"], "grants must be an object"),
    ],
)
async def test_bad_grants_are_rejected(keys: Keys, grants: object, message: str) -> None:
    with pytest.raises(Unauthorized, match=message):
        await keys.auth.verify_token(sign(keys, claims_for(keys, grants=grants)))


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"subscribe": "bob"}, "list of uid patterns"),
        ({"message": [1, 2]}, "list of uid patterns"),
        ({"kick": ["*"]}, "unknown policy"),
        ("everyone", "policy must be an object"),
    ],
)
async def test_a_bad_policy_is_rejected(keys: Keys, policy: object, message: str) -> None:
    with pytest.raises(Unauthorized, match=message):
        await keys.auth.verify_token(sign(keys, claims_for(keys, policy=policy)))


async def test_a_name_must_be_a_short_string(keys: Keys) -> None:
    with pytest.raises(Unauthorized, match="name"):
        await keys.auth.verify_token(sign(keys, claims_for(keys, name=["Alice"])))
    with pytest.raises(Unauthorized, match="name"):
        await keys.auth.verify_token(sign(keys, claims_for(keys, name="A" * 257)))


async def test_rejection_messages_are_lowercase_without_final_period(keys: Keys) -> None:
    bad = [sign(keys, claims_for(keys, exp=None)), sign(keys, claims_for(keys, sid="no space")), "x.y.z"]
    for token in bad:
        with pytest.raises(Unauthorized) as caught:
            await keys.auth.verify_token(token)
        assert caught.value.message == caught.value.message.lower()
        assert not caught.value.message.endswith(".")


async def test_the_clock_decides_expiry(keys: Keys) -> None:
    token = sign(keys, claims_for(keys))
    later = Authenticator(keys.store, clock=lambda: NOW + 700)
    assert (await keys.auth.verify_token(token)).uid == "alice-1"
    with pytest.raises(Unauthorized, match="expired"):
        await later.verify_token(token)


# admin


async def test_an_admin_token_needs_no_sub_or_sid(keys: Keys) -> None:
    token = sign(keys, claims_for(keys, sub=None, sid=None, grants={"admin": True}))
    identity = await keys.auth.verify_admin(f"Bearer {token}")
    assert identity.grants.admin and identity.cid == keys.cid and identity.uid == "" and identity.sid == ""


async def test_a_non_admin_token_is_forbidden_for_admin_use(keys: Keys) -> None:
    with pytest.raises(Forbidden, match="does not grant admin"):
        await keys.auth.verify_admin(f"Bearer {sign(keys, claims_for(keys))}")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer  ", "Basic dXNlcjpwYXNz", "Token abc"])
async def test_a_missing_or_non_bearer_authorization_is_unauthorized(keys: Keys, header: str | None) -> None:
    with pytest.raises(Unauthorized):
        await keys.auth.verify_admin(header)


async def test_an_invalid_admin_token_is_unauthorized(keys: Keys) -> None:
    token = sign(
        keys, claims_for(keys, grants={"admin": True}), secret="sk_wrong-wrong-wrong-wrong-wrong-wrong"
    )
    with pytest.raises(Unauthorized, match="signature"):
        await keys.auth.verify_admin(f"Bearer {token}")


async def test_the_bearer_scheme_is_case_insensitive(keys: Keys) -> None:
    token = sign(keys, claims_for(keys, grants={"admin": True}))
    assert (await keys.auth.verify_admin(f"bearer {token}")).grants.admin


async def test_a_revoked_keys_admin_token_stops_at_once(keys: Keys) -> None:
    token = sign(keys, claims_for(keys, sub=None, sid=None, grants={"admin": True}))
    await keys.auth.verify_admin(f"Bearer {token}")
    await keys.store.revoke_key(keys.key_id)
    with pytest.raises(Unauthorized, match="revoked"):
        await keys.auth.verify_admin(f"Bearer {token}")


# web-only keys


async def test_a_web_only_key_with_a_matching_origin_gives_its_grants(keys: Keys) -> None:
    identity = await keys.auth.verify_web_key(
        keys.web_key, "https://app.example.com", sid="standup", uid="alice-1", name="Alice"
    )
    assert (identity.cid, identity.key_id, identity.via) == (keys.cid, keys.web_key_id, "web_only")
    assert (identity.sid, identity.uid, identity.name) == ("standup", "alice-1", "Alice")
    assert identity.grants == Grants(record=True)
    assert identity.max_participants == 8
    assert identity.expires_at is None


async def test_a_web_only_key_never_grants_admin(keys: Keys) -> None:
    identity = await keys.auth.verify_web_key(
        keys.web_key, "http://localhost:8000", sid="s", uid="u", name=None
    )
    assert identity.grants.admin is False


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "null",
        "https://example.com",
        "https://evil-example.com",
        "http://a.example.com",
        "http://localhost:8001",
        "garbage",
    ],
)
async def test_a_missing_or_foreign_origin_is_forbidden(keys: Keys, origin: str | None) -> None:
    with pytest.raises(Forbidden, match="origin not allowed"):
        await keys.auth.verify_web_key(keys.web_key, origin, sid="s", uid="u", name=None)


@pytest.mark.parametrize("key", ["wk_unknown", "", "sk_something", "k_123"])
async def test_an_unknown_web_only_key_is_unauthorized(keys: Keys, key: str) -> None:
    with pytest.raises(Unauthorized, match="unknown web-only key"):
        await keys.auth.verify_web_key(key, "https://a.example.com", sid="s", uid="u", name=None)


async def test_a_revoked_web_only_key_stops_at_once(keys: Keys) -> None:
    await keys.auth.verify_web_key(keys.web_key, "https://a.example.com", sid="s", uid="u", name=None)
    await keys.store.revoke_key(keys.web_key_id)
    with pytest.raises(Unauthorized, match="revoked"):
        await keys.auth.verify_web_key(keys.web_key, "https://a.example.com", sid="s", uid="u", name=None)


@pytest.mark.parametrize(("sid", "uid"), [("bad sid", "u"), ("s", ""), ("s", "x" * 129)])
async def test_a_web_only_join_needs_valid_identifiers(keys: Keys, sid: str, uid: str) -> None:
    with pytest.raises(BadRequest, match="1-128"):
        await keys.auth.verify_web_key(keys.web_key, "https://a.example.com", sid=sid, uid=uid, name=None)
