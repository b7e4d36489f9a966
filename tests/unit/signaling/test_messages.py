"""Parsing and validation of every request type: good frames parse, bad ones name the field."""

from __future__ import annotations

from typing import Any

import pytest

from sfu.errors import BadRequest, TooLarge
from sfu.signaling import messages


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "join", "token": "t"}, messages.Join("t", None, None, None, None, None, True, None)),
        ({"type": "join", "key": "wk_1", "session": "s", "uid": "u", "auto_subscribe": False},
         messages.Join(None, "wk_1", "s", "u", None, None, False, None)),
        ({"type": "send", "data": {"a": 1}}, messages.Send({"a": 1}, None, "default", False)),
        ({"type": "send", "data": 0, "to": ["b", "b"], "pipeline": "chat", "persist": True},
         messages.Send(0, ("b",), "chat", True)),
        ({"type": "history", "pipeline": "chat", "after": 4}, messages.History("chat", None, 4, 50)),
        ({"type": "update", "name": "A"}, messages.Update("A")),
        ({"type": "refresh", "token": "t"}, messages.Refresh("t")),
        ({"type": "mute", "feed_id": "f_1", "muted": False}, messages.Mute("f_1", False)),
        ({"type": "subscribe", "feed_ids": ["f_1"]}, messages.FeedList(("f_1",))),
        ({"type": "publish", "sdp": "v=0", "feeds": [{"mid": "0", "source": "camera", "name": "cam"}]},
         messages.Publish("v=0", (messages.PublishFeed("0", "camera", "cam"),))),
        ({"type": "answer", "sdp": "v=0", "negotiation": 3}, messages.Answer("v=0", 3)),
        ({"type": "candidate", "transport": "subscriber", "candidate": {"candidate": "c", "sdpMid": "0",
                                                                          "sdpMLineIndex": 0}},
         messages.Candidate("subscriber", "c", "0", 0)),
        ({"type": "set_quality", "feed_id": "f_1", "layer": "h"},
         messages.SetQuality("f_1", None, None, "h", None)),
    ],
)
def test_valid_requests_parse_into_their_types(frame: dict[str, Any], expected: object) -> None:
    assert messages.parse_request(frame) == expected


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"type": "join"}, "token or key"),
        ({"type": "join", "token": "t", "key": "k"}, "token or key"),
        ({"type": "join", "key": "wk_1", "uid": "u"}, "session"),
        ({"type": "join", "key": "wk_1", "session": "bad name", "uid": "u"}, "session"),
        ({"type": "join", "token": 5}, "token"),
        ({"type": "ping", "id": [1]}, "id"),
        ({"type": "ping", "id": True}, "id"),
        ({"type": "send"}, "data"),
        ({"type": "send", "data": 1, "to": [""]}, "to"),
        ({"type": "send", "data": 1, "persist": "yes"}, "persist"),
        ({"type": "history", "before": 1, "after": 2}, "before or after"),
        ({"type": "history", "limit": 0}, "limit"),
        ({"type": "history", "before": True}, "before"),
        ({"type": "update"}, "name"),
        ({"type": "update", "name": "x" * 300}, "name"),
        ({"type": "publish", "sdp": "v=0", "feeds": [{"mid": "0", "source": "tv"}]}, "source"),
        ({"type": "publish", "sdp": "v=0", "feeds": [{"mid": "0"}, {"mid": "0"}]}, "mid"),
        ({"type": "candidate", "transport": "other", "candidate": {}}, "transport"),
        ({"type": "set_quality", "feed_id": "f", "layer": "x"}, "layer"),
        ({"type": "whatever"}, "unknown type"),
    ],
)
def test_invalid_requests_are_bad_requests_naming_the_field(frame: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as raised:
        messages.parse_request(frame)
    assert field in raised.value.message
    assert raised.value.message[0].islower()
    assert not raised.value.message.endswith(".")


def test_data_over_16_kib_encoded_is_too_large() -> None:
    messages.parse_send({"type": "send", "data": "x" * 16000})
    with pytest.raises(TooLarge):
        messages.parse_send({"type": "send", "data": "x" * 16400})


@pytest.mark.parametrize("raw", ["", "{", "[]", "1", '{"type": 1}', '{"id": 1}', b"\xff"])
def test_frames_that_are_not_objects_with_a_type_are_refused(raw: str | bytes) -> None:
    with pytest.raises(BadRequest):
        messages.decode_frame(raw)


@pytest.mark.parametrize(("frame", "rid"), [({"id": 7}, 7), ({"id": "a"}, "a"), ({"id": True}, None),
                                            ({"id": 2**60}, None), ({}, None), ({"id": "x" * 200}, None)])
def test_request_id_is_a_string_or_integer(frame: dict[str, Any], rid: object) -> None:
    assert messages.request_id(frame) == rid
