"""Turns a credential (join JWT, web-only key + Origin, admin bearer JWT) into an Identity, or refuses it.

Every call reads the key from the store: nothing is cached, so a revoked key stops working at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sfu.auth.identity import Identity, is_identifier
from sfu.auth.keys import origin_allowed
from sfu.auth.tokens import MAX_NAME_CHARS, TokenClaims, check_claims, decode_verified, read_header
from sfu.errors import BadRequest, Forbidden, Unauthorized
from sfu.store.base import Store


class Authenticator:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def verify_token(self, token: str) -> Identity:
        """A join JWT: signature, times, claims, and `sub` + `sid` present."""
        return await self._verify_jwt(token, join=True)

    async def verify_admin(self, authorization: str | None) -> Identity:
        """`Authorization: Bearer <jwt>` whose grants include admin; admin tokens need no sub/sid."""
        if not authorization:
            raise Unauthorized("missing authorization bearer token")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("authorization must be a bearer token")
        identity = await self._verify_jwt(token.strip(), join=False)
        if not identity.grants.admin:
            raise Forbidden("token does not grant admin")
        return identity

    async def verify_web_key(
        self, key: str, origin: str | None, *, sid: str, uid: str, name: str | None
    ) -> Identity:
        """A join with a `wk_...` key: the key must be live and the page's Origin one of its origins."""
        is_web_key = isinstance(key, str) and key.startswith("wk_")
        record = await self.store.find_web_key(key) if is_web_key else None
        if record is None:
            raise Unauthorized("unknown web-only key")
        if record.revoked:
            raise Unauthorized("key is revoked")
        if not origin_allowed(record.origins, origin):
            raise Forbidden("origin not allowed")
        if not is_identifier(sid):
            raise BadRequest("session must be 1-128 characters of letters, digits and _.:@-")
        if not is_identifier(uid):
            raise BadRequest("uid must be 1-128 characters of letters, digits and _.:@-")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_CHARS):
            raise BadRequest(f"name must be a string of at most {MAX_NAME_CHARS} characters")
        return Identity(
            cid=record.cid,
            key_id=record.key_id,
            via="web_only",
            uid=uid,
            sid=sid,
            name=name,
            grants=replace(record.grants, admin=False),
            max_participants=record.max_participants,
        )

    async def _verify_jwt(self, token: str, *, join: bool) -> Identity:
        alg, kid = read_header(token)
        record = await self.store.get_key(kid)
        if record is None or record.type != "secret":
            raise Unauthorized("token kid names no known key")
        if record.revoked:
            raise Unauthorized("key is revoked")
        if alg != record.algorithm:
            raise Unauthorized("token algorithm does not match the key")
        verifying_key: Any
        if record.algorithm == "HS256":
            verifying_key = await self.store.key_secret(kid)
            if verifying_key is None:
                raise Unauthorized("key is revoked")
        else:
            verifying_key = record.public_key
            if not verifying_key:
                raise Unauthorized("key has no public key")
        claims = check_claims(decode_verified(token, verifying_key, record.algorithm), kid, self.clock(),
                              join=join)
        return _identity(record.cid, claims)


def _identity(cid: str, claims: TokenClaims) -> Identity:
    return Identity(
        cid=cid,
        key_id=claims.key_id,
        via="jwt",
        uid=claims.uid,
        sid=claims.sid,
        name=claims.name,
        description=claims.description,
        grants=claims.grants,
        policy=claims.policy,
        expires_at=claims.expires_at,
    )
