"""JWTs of PROTOCOL.md "Credentials": minting (HS256) and the pure checks every verified token goes through.

Signature checking needs the store (which key, which secret) and lives in authenticator.py; everything
here is a pure function of the token text, the claims and `now`, so the rules are table-testable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

from sfu.auth.identity import Grants, Policy, is_identifier
from sfu.errors import BadRequest, Unauthorized

LEEWAY_S = 30.0
MAX_LIFETIME_S = 24 * 3600.0
MAX_DESCRIPTION_BYTES = 4096
MAX_NAME_CHARS = 256


def create_token(
    *,
    key_id: str,
    secret: str | bytes,
    sid: str | None,
    uid: str | None,
    ttl_s: float = 3600,
    name: str | None = None,
    description: dict[str, Any] | None = None,
    grants: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """An HS256 join (or, with grants.admin, admin) token; the HMAC key is the secret's UTF-8 bytes."""
    if not 0 < ttl_s <= MAX_LIFETIME_S:
        raise BadRequest("ttl must be positive and at most 24 h")
    Grants.from_wire(grants)  # fail here rather than at the server
    Policy.from_wire(policy)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iss": key_id, "iat": issued, "nbf": issued, "exp": issued + int(ttl_s)}
    if uid is not None:
        claims["sub"] = uid
    if sid is not None:
        claims["sid"] = sid
    optional = {"name": name, "description": description, "grants": grants, "policy": policy}
    claims.update({k: v for k, v in optional.items() if v is not None})
    key = secret.encode() if isinstance(secret, str) else secret
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": key_id})


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a token says once every rule passed; `uid`/`sid` are empty on an admin token without them."""

    key_id: str
    uid: str
    sid: str
    name: str | None
    description: dict[str, Any]
    grants: Grants
    policy: Policy
    expires_at: float


def read_header(token: str) -> tuple[str, str]:
    """(alg, kid) from the unverified header; rejects `alg: none` before any key is looked up."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise Unauthorized("token is malformed")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Unauthorized("token is malformed") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise Unauthorized("token algorithm none is not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthorized("token has no kid")
    return alg, kid


def decode_verified(token: str, key: Any, algorithm: str) -> dict[str, Any]:
    """The claims if the signature verifies with `key` under exactly `algorithm`; times are checked later."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_iss": False,
                     "verify_aud": False, "verify_sub": False, "verify_jti": False},
        )
    except jwt.InvalidSignatureError:
        raise Unauthorized("token signature is invalid") from None
    except jwt.InvalidAlgorithmError:
        raise Unauthorized("token algorithm does not match the key") from None
    except jwt.PyJWTError:
        raise Unauthorized("token is malformed") from None
    if not isinstance(claims, dict):
        raise Unauthorized("token is malformed")
    return claims


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized(f"token {name} must be a number")
    return float(value)


def check_times(claims: dict[str, Any], now: float) -> float:
    """Applies exp/nbf/iat and the 24 h lifetime rule (30 s leeway on clocks); returns `exp`."""
    exp = _number(claims, "exp")
    nbf = _number(claims, "nbf")
    iat = _number(claims, "iat")
    if exp is None:
        raise Unauthorized("token has no exp")
    if exp <= now - LEEWAY_S:
        raise Unauthorized("token has expired")
    if nbf is not None and nbf > now + LEEWAY_S:
        raise Unauthorized("token is not valid yet (nbf)")
    if iat is not None and iat > now + LEEWAY_S:
        raise Unauthorized("token iat is in the future")
    start = iat if iat is not None else nbf if nbf is not None else now
    if exp - start > MAX_LIFETIME_S:
        raise Unauthorized("token lifetime exceeds 24 h (exp - iat)")
    return exp


def check_claims(claims: dict[str, Any], key_id: str, now: float, *, join: bool) -> TokenClaims:
    """Every claim rule of PROTOCOL.md; `join` requires `sub` and `sid` (admin tokens may omit them)."""
    if claims.get("iss") != key_id:
        raise Unauthorized("token iss does not match its kid")
    exp = check_times(claims, now)
    ids: dict[str, str] = {}
    for claim in ("sid", "sub"):
        value = claims.get(claim)
        if value is None:
            if join:
                raise Unauthorized(f"token has no {claim}")
            ids[claim] = ""
        elif not is_identifier(value):
            raise Unauthorized(f"token {claim} must be 1-128 characters of letters, digits and _.:@-")
        else:
            ids[claim] = value
    name = claims.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_CHARS):
        raise Unauthorized(f"token name must be a string of at most {MAX_NAME_CHARS} characters")
    description = claims.get("description", {})
    if not isinstance(description, dict):
        raise Unauthorized("token description must be an object")
    if len(orjson.dumps(description)) > MAX_DESCRIPTION_BYTES:
        raise Unauthorized("token description exceeds 4 KiB")
    try:
        grants = Grants.from_wire(claims.get("grants"))
        policy = Policy.from_wire(claims.get("policy"))
    except BadRequest as exc:
        raise Unauthorized(f"token {exc.message}") from None
    return TokenClaims(key_id, ids["sub"], ids["sid"], name, description, grants, policy, exp)
