"""Wire parsing and events: what the server sends becomes typed, frozen objects."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from client_sdk import events as ev
from client_sdk.errors import BadRequest
from client_sdk.wire import Feed, Grants, Joined, Layer, Message

FEED = {
    "feed_id": "f_1",
    "uid": "alice",
    "kind": "video",
    "source": "camera",
    "name": "cam",
    "muted": False,
    "codec": "VP8",
    "layers": [{"rid": "q", "width": 320, "height": 180, "max_bitrate": 150000}],
}


def test_joined_parses_every_documented_field_and_ignores_added_ones() -> None:
    joined = Joined.from_wire(
        {
            "type": "joined",
            "re": 1,
            "future_field": 1,
            "session": {"sid": "standup", "cid": "c_1", "recording": True},
            "participant": {
                "uid": "bob",
                "name": "Bob",
                "description": {"role": "host"},
                "grants": {"publish": ["camera"], "hidden": True},
            },
            "participants": [{"uid": "alice", "name": None, "description": {}, "feeds": [FEED]}],
            "ice_servers": [{"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "c"}],
            "resume": "r.1",
            "history": {
                "chat": [
                    {
                        "type": "message",
                        "from": "alice",
                        "pipeline": "chat",
                        "seq": 4,
                        "ts": 9,
                        "data": {"text": "hi"},
                    }
                ]
            },
            "resumed": False,
        }
    )
    assert joined.session.recording is True
    assert joined.participant.grants == Grants(publish=("camera",), hidden=True)
    assert joined.participants[0].feeds[0].layers == (Layer("q", 320, 180, 150000),)
    assert joined.ice_servers[0].urls == ("turn:127.0.0.1:3478",)
    assert joined.history["chat"] == (Message("alice", "chat", 4, 9, {"text": "hi"}),)
    assert (joined.resume, joined.resumed) == ("r.1", False)


def test_grants_absent_from_the_wire_take_the_protocol_defaults() -> None:
    assert Grants.from_wire(None) == Grants(True, True, True, False, False, False, False)


def test_a_field_of_the_wrong_type_raises_bad_request() -> None:
    with pytest.raises(BadRequest, match="feed_id"):
        Feed.from_wire({**FEED, "feed_id": 7})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"type": "participant_left", "uid": "bob", "reason": "left"}, ev.ParticipantLeft("bob", "left")),
        ({"type": "feed_published", "feed": FEED}, ev.FeedPublished(Feed.from_wire(FEED))),
        ({"type": "feed_unpublished", "feed_id": "f_1"}, ev.FeedUnpublished("f_1")),
        (
            {"type": "feed_updated", "feed": {**FEED, "muted": True}},
            ev.FeedUpdated(dataclasses.replace(Feed.from_wire(FEED), muted=True)),
        ),
        (
            {"type": "active_speakers", "speakers": [{"uid": "a", "level": 0.5}]},
            ev.ActiveSpeakers((ev.Speaker("a", 0.5),)),
        ),
        ({"type": "recording", "state": "started", "recording_id": "r_1"}, ev.Recording("started", "r_1")),
        (
            {"type": "layer_changed", "feed_id": "f_1", "rid": "h", "reason": "bandwidth"},
            ev.LayerChanged("f_1", "h", "bandwidth"),
        ),
        (
            {"type": "layer_changed", "feed_id": "f_1", "rid": None, "reason": "bandwidth", "paused": True},
            ev.LayerChanged("f_1", None, "bandwidth", paused=True),
        ),
        ({"type": "layers_wanted", "feed_id": "f_1", "rids": ["q", "h"]}, ev.LayersWanted("f_1", ("q", "h"))),
        ({"type": "closed", "reason": "kicked"}, ev.Closed("kicked")),
        (
            {"type": "message", "from": "a", "pipeline": "chat", "seq": 1, "ts": 2, "data": [1]},
            Message("a", "chat", 1, 2, [1]),
        ),
        (
            {"type": "something_new", "x": 1},
            ev.UnknownEvent("something_new", {"type": "something_new", "x": 1}),
        ),
    ],
)
def test_server_messages_become_typed_events(body: dict[str, Any], expected: ev.Event) -> None:
    assert ev.parse_event(body) == expected


def test_participant_events_carry_the_participant() -> None:
    event = ev.parse_event({"type": "participant_joined", "participant": {"uid": "bob", "feeds": [FEED]}})
    assert isinstance(event, ev.ParticipantJoined)
    assert event.participant.feeds[0].feed_id == "f_1"


def test_events_are_frozen() -> None:
    event = ev.FeedUnpublished("f_1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.feed_id = "f_2"  # type: ignore[misc]


def test_binary_data_messages_round_trip_through_the_header_format() -> None:
    raw = ev.encode_data_message(b"\x00\x01payload", topic="cursor", to=["bob"])
    assert raw[:2] == len(b'{"to":["bob"],"topic":"cursor"}').to_bytes(2, "big")
    server_side = (
        len(b'{"from":"alice","topic":"cursor"}').to_bytes(2, "big") + b'{"from":"alice","topic":"cursor"}'
    )
    assert ev.decode_data_message(server_side + b"xy", reliable=False) == ev.DataReceived(
        "alice", "cursor", b"xy", False
    )


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\x00\x09{}", b"\x00\x02[]", b"\x00\x02{x"])
def test_a_broken_binary_data_message_is_ignored(raw: bytes) -> None:
    assert ev.decode_data_message(raw, reliable=True) is None
