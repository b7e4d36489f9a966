"""Binary data-channel messages (PROTOCOL.md "Binary data channels"): framing, limits and counters.

Pure and synchronous: no aiortc, no session. A message is a 2-byte big-endian header length, a UTF-8
JSON header, then the payload. Clients send `{"to":[..],"topic":..}`, the server sends
`{"from":uid,"topic":..}`. A data channel has no reply, so whatever breaks a rule is dropped and counted
(STYLE.md section 5: count, never raise or log per message).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson

RELIABLE_LABEL = "reliable"  # ordered, retransmitted
LOSSY_LABEL = "lossy"  # unordered, maxRetransmits 0
LABELS = (RELIABLE_LABEL, LOSSY_LABEL)

MAX_PAYLOAD_BYTES = 15 * 1024  # PROTOCOL.md: payload at most 15 KiB
MAX_HEADER_BYTES = 4096  # room for `to` with ~100 long uids; larger headers are malformed
MAX_RECIPIENTS = 256
MAX_TOPIC_CHARS = 128


class DataDropReason(enum.IntEnum):
    """Why a data message (or one recipient's copy of it) was not delivered."""

    MALFORMED = 0  # text frame, short frame, header length past the end, bad JSON, bad `to`/`topic`
    OVERSIZE = 1  # payload over MAX_PAYLOAD_BYTES
    FORBIDDEN = 2  # the sender's grants.data is false
    POLICY = 3  # a `to` uid the sender's policy.message does not allow (per recipient)
    UNKNOWN_RECIPIENT = 4  # a `to` uid not in the session (per recipient)
    LOSSY_CONGESTED = 5  # lossy copy: the recipient's lossy channel is not open or its buffer is full
    RELIABLE_OVERFLOW = 6  # reliable copy: the recipient's backlog passed its bound; its channel was reset
    CHANNEL_CLOSED = 7  # the recipient's channel closed while the copy was queued or being sent


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A parsed client-to-server message; `to` None means everyone the sender's policy allows."""

    to: tuple[str, ...] | None
    topic: str | None
    payload: bytes


class DataCounters:
    """Plain counters for metrics: messages and bytes in, relayed (per recipient copy) and dropped.

    `drops[reason]` / `drop_bytes[reason]` are indexed by DataDropReason; bytes are payload bytes.
    Per-recipient reasons (POLICY onward) count one per recipient copy.
    """

    __slots__ = ("bytes_in", "bytes_relayed", "channel_resets", "drop_bytes", "drops", "messages_in",
                 "messages_relayed")

    def __init__(self) -> None:
        self.messages_in = 0
        self.bytes_in = 0
        self.messages_relayed = 0
        self.bytes_relayed = 0
        self.channel_resets = 0
        self.drops = [0] * len(DataDropReason)
        self.drop_bytes = [0] * len(DataDropReason)

    def as_dict(self) -> dict[str, int]:
        """Every counter by name (drops as `dropped_<reason>` / `dropped_bytes_<reason>`)."""
        out = {
            "messages_in": self.messages_in,
            "bytes_in": self.bytes_in,
            "messages_relayed": self.messages_relayed,
            "bytes_relayed": self.bytes_relayed,
            "channel_resets": self.channel_resets,
        }
        for reason in DataDropReason:
            out[f"dropped_{reason.name.lower()}"] = self.drops[reason]
            out[f"dropped_bytes_{reason.name.lower()}"] = self.drop_bytes[reason]
        return out


TOTALS = DataCounters()
"""Process-wide totals over every session (each relay also keeps its own); read by /metrics."""


def _header(raw: bytes) -> tuple[Any, int] | None:
    if len(raw) < 2:
        return None
    size = (raw[0] << 8) | raw[1]
    if size > MAX_HEADER_BYTES or len(raw) < 2 + size:
        return None
    try:
        return orjson.loads(raw[2 : 2 + size]), 2 + size
    except orjson.JSONDecodeError:  # also invalid UTF-8
        return None


def parse_client_message(raw: object) -> ClientMessage | DataDropReason:
    """The message, or why it must be dropped (MALFORMED or OVERSIZE); never raises."""
    if not isinstance(raw, bytes | bytearray):
        return DataDropReason.MALFORMED
    parsed = _header(bytes(raw))
    if parsed is None:
        return DataDropReason.MALFORMED
    header, start = parsed
    if not isinstance(header, dict):
        return DataDropReason.MALFORMED
    to = header.get("to")
    if to is not None and (
        not isinstance(to, list) or len(to) > MAX_RECIPIENTS or not all(isinstance(u, str) for u in to)
    ):
        return DataDropReason.MALFORMED
    topic = header.get("topic")
    if topic is not None and (not isinstance(topic, str) or len(topic) > MAX_TOPIC_CHARS):
        return DataDropReason.MALFORMED
    if len(raw) - start > MAX_PAYLOAD_BYTES:
        return DataDropReason.OVERSIZE
    return ClientMessage(tuple(dict.fromkeys(to)) if to is not None else None, topic, bytes(raw[start:]))


def encode_server_message(from_uid: str, topic: str | None, payload: bytes) -> bytes:
    """A server-to-client message: header `{"from":uid,"topic":..}` (topic left out when None)."""
    header: dict[str, str] = {"from": from_uid}
    if topic is not None:
        header["topic"] = topic
    encoded = orjson.dumps(header)
    return len(encoded).to_bytes(2, "big") + encoded + payload


def encode_client_message(payload: bytes, topic: str | None = None, to: list[str] | None = None) -> bytes:
    """A client-to-server message (tests and the load tool; the SDK has its own copy)."""
    header: dict[str, Any] = {}
    if to is not None:
        header["to"] = list(to)
    if topic is not None:
        header["topic"] = topic
    encoded = orjson.dumps(header)
    return len(encoded).to_bytes(2, "big") + encoded + payload
