"""Resume tokens: opaque, signed with a per-process random key, bound to one participant incarnation.

Validity in time is not in the token: the server keeps a dropped participant for `resume_window_s` and a
token only names which one; once it is gone the token matches nothing and the join is a fresh one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import orjson


class ResumeTokens:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def issue(self, cid: str, sid: str, uid: str, incarnation: str) -> str:
        body = orjson.dumps([cid, sid, uid, incarnation])
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + mac.hex()

    def incarnation(self, token: str, cid: str, sid: str, uid: str) -> str | None:
        """The incarnation a valid token for (cid, sid, uid) names, else None (never raises)."""
        encoded, _, mac_hex = token.partition(".")
        try:
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            mac = bytes.fromhex(mac_hex)
        except ValueError:
            return None
        expected = hmac.new(self._key, body, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            return None
        try:
            values = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(values, list) or len(values) != 4 or values[:3] != [cid, sid, uid]:
            return None
        incarnation = values[3]
        return incarnation if isinstance(incarnation, str) else None
