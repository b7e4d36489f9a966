"""`data_reset` (docs/protocol.md "Binary data channels") parses into the typed DataReset event."""

from __future__ import annotations

import pytest

import client_sdk
from client_sdk import events as ev
from client_sdk.errors import BadRequest


def test_data_reset_becomes_a_typed_event() -> None:
    event = ev.parse_event({"type": "data_reset", "channel": "reliable", "dropped": 37})
    assert event == ev.DataReset(channel="reliable", dropped=37)
    assert isinstance(event, client_sdk.DataReset) and event.reliable


def test_data_reset_tolerates_absent_and_odd_fields_but_not_a_wrong_channel_type() -> None:
    assert ev.parse_event({"type": "data_reset"}) == ev.DataReset("reliable", 0)
    lossy = ev.parse_event({"type": "data_reset", "channel": "lossy", "dropped": True, "extra": 1})
    assert lossy == ev.DataReset("lossy", 0)
    assert isinstance(lossy, ev.DataReset) and not lossy.reliable
    with pytest.raises(BadRequest):
        ev.parse_event({"type": "data_reset", "channel": 3})
