"""Framing of binary data-channel messages (PROTOCOL.md "Binary data channels"), table-driven."""

from __future__ import annotations

import orjson
import pytest

from client_sdk.events import decode_data_message, encode_data_message
from sfu.media.datachannels import (
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    ClientMessage,
    DataCounters,
    DataDropReason,
    encode_client_message,
    encode_server_message,
    parse_client_message,
)


def framed(header: bytes, payload: bytes = b"") -> bytes:
    return len(header).to_bytes(2, "big") + header + payload


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (framed(b"{}", b"x"), ClientMessage(None, None, b"x")),
        (framed(b"{}"), ClientMessage(None, None, b"")),
        (
            framed(b'{"to":["bob"],"topic":"cursor"}', b"\x00\xff"),
            ClientMessage(("bob",), "cursor", b"\x00\xff"),
        ),
        (framed(b'{"to":[]}', b"p"), ClientMessage((), None, b"p")),
        (framed(b'{"to":["a","a","b"]}'), ClientMessage(("a", "b"), None, b"")),
        (framed(b'{"topic":null,"extra":1}', b"p"), ClientMessage(None, None, b"p")),
        (framed(b"{}", b"\x00\x02{}"), ClientMessage(None, None, b"\x00\x02{}")),
        (framed(b"{}", bytes(MAX_PAYLOAD_BYTES)), ClientMessage(None, None, bytes(MAX_PAYLOAD_BYTES))),
    ],
)
def test_well_formed_client_messages_parse(raw: bytes, expected: ClientMessage) -> None:
    assert parse_client_message(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("text frame", DataDropReason.MALFORMED),
        (b"", DataDropReason.MALFORMED),
        (b"\x00", DataDropReason.MALFORMED),
        (b"\x00\x05{}", DataDropReason.MALFORMED),  # header length past the end
        (framed(b"{"), DataDropReason.MALFORMED),
        (framed(b"[]"), DataDropReason.MALFORMED),
        (framed(b'"to"'), DataDropReason.MALFORMED),
        (framed(b"\xff\xfe"), DataDropReason.MALFORMED),  # not UTF-8
        (framed(b""), DataDropReason.MALFORMED),
        (framed(b'{"to":"bob"}'), DataDropReason.MALFORMED),
        (framed(b'{"to":[1]}'), DataDropReason.MALFORMED),
        (framed(b'{"topic":5}'), DataDropReason.MALFORMED),
        (framed(orjson.dumps({"topic": "t" * 129})), DataDropReason.MALFORMED),
        (framed(orjson.dumps({"to": [f"u{i}" for i in range(257)]})), DataDropReason.MALFORMED),
        (framed(b" " * (MAX_HEADER_BYTES - 1) + b"{}"), DataDropReason.MALFORMED),
        (framed(b"{}", bytes(MAX_PAYLOAD_BYTES + 1)), DataDropReason.OVERSIZE),
    ],
)
def test_malformed_or_oversize_client_messages_are_refused_with_a_reason(
    raw: object, reason: DataDropReason
) -> None:
    assert parse_client_message(raw) is reason


@pytest.mark.parametrize(
    ("from_uid", "topic", "payload"),
    [("alice", "cursor", b"xy"), ("a:b@c", None, b""), ("bob", "t", bytes(range(256)) * 60)],
)
def test_server_messages_decode_in_the_sdk(from_uid: str, topic: str | None, payload: bytes) -> None:
    event = decode_data_message(encode_server_message(from_uid, topic, payload), reliable=True)
    assert event is not None
    assert (event.from_uid, event.topic, event.payload, event.reliable) == (from_uid, topic, payload, True)


@pytest.mark.parametrize(
    ("to", "topic", "payload"),
    [(None, None, b"p"), (["bob", "carol"], "cursor", b"\x00" * 100), ([], "t", b"")],
)
def test_sdk_and_server_client_framing_agree(to: list[str] | None, topic: str | None, payload: bytes) -> None:
    wire = encode_data_message(payload, topic, to)
    assert wire == encode_client_message(payload, topic, to)
    assert parse_client_message(wire) == ClientMessage(tuple(to) if to is not None else None, topic, payload)


def test_counters_name_every_reason() -> None:
    counters = DataCounters()
    counters.drops[DataDropReason.OVERSIZE] += 1
    names = counters.as_dict()
    assert names["dropped_oversize"] == 1
    assert {f"dropped_{r.name.lower()}" for r in DataDropReason} <= set(names)
