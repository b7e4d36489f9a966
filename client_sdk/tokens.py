"""Tokens for back ends: mint join and admin JWTs exactly as PROTOCOL.md "Credentials" describes.

HS256 with the secret key's secret (its UTF-8 bytes), header `kid` = `key_id`, `iss` = `key_id`,
`sub` = uid, `sid` = session name, `iat`/`nbf`/`exp` (at most 24 h apart).
"""

from __future__ import annotations

import time
from typing import Any

import jwt

MAX_TTL_S = 24 * 3600


def _claims(key_id: str, ttl: float, now: float | None) -> dict[str, Any]:
    if not 0 < ttl <= MAX_TTL_S:
        raise ValueError("ttl must be positive and at most 24 h (86400 s)")
    issued = int(time.time() if now is None else now)
    return {"iss": key_id, "iat": issued, "nbf": issued, "exp": issued + int(ttl)}


def _sign(claims: dict[str, Any], key_id: str, secret: str | bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": key_id})


def create_token(
    key_id: str,
    secret: str | bytes,
    session: str,
    uid: str,
    *,
    ttl: float = 3600,
    name: str | None = None,
    grants: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    description: dict[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """A join token for `uid` in `session`, valid `ttl` seconds (grants/policy as in PROTOCOL.md)."""
    claims = _claims(key_id, ttl, now)
    claims["sub"] = uid
    claims["sid"] = session
    optional = {"name": name, "description": description, "grants": grants, "policy": policy}
    claims.update({k: v for k, v in optional.items() if v is not None})
    return _sign(claims, key_id, secret)


def create_admin_token(
    key_id: str, secret: str | bytes, *, ttl: float = 600, now: float | None = None
) -> str:
    """An admin token for the REST API (`grants.admin`, no `sub`/`sid`); short-lived by default."""
    claims = _claims(key_id, ttl, now)
    claims["grants"] = {"admin": True}
    return _sign(claims, key_id, secret)
