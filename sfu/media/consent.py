"""Binding success responses to ICE consent checks, built without aioice's message objects.

Every peer checks consent (RFC 7675) about every 5 s on the pair it uses: with 1,000 peers that is ~200
requests a second, each answered by aioice by parsing it into a `stun.Message`, resolving the address
through `ipaddress` and serializing a response attribute by attribute, ~47 us of Python.
`BindingAnswerer` does what RFC 8489 asks of the answer and nothing else, in ~5 us: check the request's
USERNAME (ours, RFC 8445 section 7.3) and MESSAGE-INTEGRITY (HMAC-SHA1 keyed with our ICE password), and
reply with XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT, byte for byte what aioice sends
(`tests/unit/media/test_consent.py`). What it does not handle returns None and is left to aioice: other
methods, USE-CANDIDATE (a nomination), a role conflict, IPv6, a malformed or unauthenticated request.
The server (`bridge.bypass_ice_queue`) and the load tool (`loadtest.taps.answer_consent_fast`) use it
through `bridge.consent_responder`, on the nominated pair only.
"""

from __future__ import annotations

import hmac
import struct
import zlib
from typing import Final

COOKIE: Final = 0x2112A442
BINDING_REQUEST: Final = b"\x00\x01"
_HEAD: Final = struct.Struct("!HHI12s")
_ATTR: Final = struct.Struct("!HH")
_XOR_ADDRESS: Final = struct.Struct("!HHBBHI")  # type, length, 0, family, port ^ cookie >> 16, ip ^ cookie
_FINGERPRINT: Final = struct.Struct("!HHI")
USERNAME: Final = 0x0006
MESSAGE_INTEGRITY: Final = 0x0008
FINGERPRINT: Final = 0x8028
USE_CANDIDATE: Final = 0x0025
ICE_CONTROLLED: Final = 0x8029
ICE_CONTROLLING: Final = 0x802A
_MI_HEAD: Final = _ATTR.pack(MESSAGE_INTEGRITY, 20)
_FINGERPRINT_XOR: Final = 0x5354554E
_BINDING_SUCCESS: Final = 0x0101
_LENGTH_FOR_MI: Final = 12 + 24  # XOR-MAPPED-ADDRESS (IPv4) + MESSAGE-INTEGRITY
_LENGTH: Final = _LENGTH_FOR_MI + 8  # + FINGERPRINT


class ConsentTotals:
    """Process-wide count of consent checks answered here instead of by aioice (`/metrics`)."""

    __slots__ = ("answered",)

    def __init__(self) -> None:
        self.answered = 0


TOTALS: Final = ConsentTotals()


class BindingAnswerer:
    """Answers Binding requests for one ICE agent (its username fragment, password and role)."""

    __slots__ = ("_key", "_mapped", "_prefix", "_reject_role")

    def __init__(self, local_username: str, local_password: str, ice_controlling: bool) -> None:
        self._key = local_password.encode()
        self._prefix = local_username.encode() + b":"
        # A request claiming our own role is a role conflict (RFC 8445 section 7.3.1.1): aioice's business.
        self._reject_role = ICE_CONTROLLING if ice_controlling else ICE_CONTROLLED
        self._mapped: dict[tuple[str, int], bytes] = {}

    def answer(self, data: bytes, addr: tuple[str, int]) -> bytes | None:
        """The response to `data` from `addr`, or None to leave the datagram to aioice."""
        if len(data) < 20 or data[:2] != BINDING_REQUEST:
            return None
        _, length, cookie, transaction_id = _HEAD.unpack_from(data)
        if cookie != COOKIE or length + 20 != len(data):
            return None
        username = b""
        offset = 20
        mi_at = -1
        while offset + 4 <= len(data):
            kind, size = _ATTR.unpack_from(data, offset)
            if kind == MESSAGE_INTEGRITY:
                mi_at = offset
                break
            if kind == USERNAME:
                username = data[offset + 4 : offset + 4 + size]
            elif kind == self._reject_role or kind == USE_CANDIDATE:
                return None
            offset += 4 + size + (-size % 4)
        if mi_at < 0 or mi_at + 24 > len(data) or not username.startswith(self._prefix):
            return None
        if not integrity_matches(data, mi_at, self._key):
            return None
        mapped = self._mapped.get(addr)
        if mapped is None:
            mapped = self._mapped[addr] = _xor_mapped(addr)
        if not mapped:
            return None
        return signed_message(_BINDING_SUCCESS, transaction_id, mapped, self._key)


def signed_message(method: int, transaction_id: bytes, attributes: bytes, key: bytes) -> bytes:
    """A STUN message: `attributes`, then MESSAGE-INTEGRITY keyed with `key` and FINGERPRINT (RFC 8489
    sections 14.5 and 14.7), as aioice serializes them."""
    length = len(attributes) + 24
    integrity = hmac.digest(key, _HEAD.pack(method, length, COOKIE, transaction_id) + attributes, "sha1")
    message = _HEAD.pack(method, length + 8, COOKIE, transaction_id) + attributes + _MI_HEAD + integrity
    crc = (zlib.crc32(message) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
    return message + _FINGERPRINT.pack(FINGERPRINT, 4, crc)


def integrity_matches(data: bytes, mi_at: int, key: bytes) -> bool:
    """Whether the MESSAGE-INTEGRITY attribute at `mi_at` of STUN message `data` verifies with `key`."""
    if mi_at + 24 > len(data):
        return False
    signed = data[:2] + (mi_at + 24 - 20).to_bytes(2, "big") + data[4:mi_at]
    return hmac.compare_digest(hmac.digest(key, signed, "sha1"), data[mi_at + 4 : mi_at + 24])


def _xor_mapped(addr: tuple[str, int]) -> bytes:
    """XOR-MAPPED-ADDRESS for an IPv4 `addr` (independent of the transaction id); b"" for anything else."""
    parts = addr[0].split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return b""
    ip = int.from_bytes(bytes(int(p) for p in parts), "big")
    return _XOR_ADDRESS.pack(0x0020, 8, 0, 1, addr[1] ^ (COOKIE >> 16), ip ^ COOKIE)
