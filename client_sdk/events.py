"""Server events as frozen dataclasses: `match` on them or `isinstance`, never on dict keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from client_sdk.wire import Feed, JsonObject, Message, Participant, _list, _obj, _opt_str, _str


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    participant: Participant


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    uid: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ParticipantUpdated:
    participant: Participant


@dataclass(frozen=True, slots=True)
class FeedPublished:
    feed: Feed


@dataclass(frozen=True, slots=True)
class FeedUnpublished:
    feed_id: str


@dataclass(frozen=True, slots=True)
class FeedUpdated:
    feed: Feed


@dataclass(frozen=True, slots=True)
class Speaker:
    uid: str
    level: float


@dataclass(frozen=True, slots=True)
class ActiveSpeakers:
    speakers: tuple[Speaker, ...]


@dataclass(frozen=True, slots=True)
class Recording:
    state: str
    recording_id: str | None = None


@dataclass(frozen=True, slots=True)
class LayerChanged:
    feed_id: str
    rid: str | None
    reason: str | None = None
    paused: bool = False  # the server paused this video for bandwidth (rid None); False again on resume


@dataclass(frozen=True, slots=True)
class LayersWanted:
    feed_id: str
    rids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DataReceived:
    """A binary data-channel message (PROTOCOL.md "Binary data channels") from another participant."""

    from_uid: str
    topic: str | None
    payload: bytes
    reliable: bool


@dataclass(frozen=True, slots=True)
class DataReset:
    """The server could not keep up sending to us on a data channel and replaced it.

    `{"type":"data_reset","channel":"reliable","dropped":N}` (docs/protocol.md "Binary data channels"):
    the `dropped` messages queued for us were discarded; what follows on the channel is in order again.
    """

    channel: str
    dropped: int

    @property
    def reliable(self) -> bool:
        return self.channel != "lossy"


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over for good: the server closed it, or `close()` was called. Always the last event."""

    reason: str
    code: int | None = None


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The socket dropped; the SDK is trying to resume (attempt counts from 1)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Back in the session; `resumed` is False when the server started us afresh and feeds were restored."""

    resumed: bool


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """A message type this SDK version does not know (the protocol may add some)."""

    type: str
    body: JsonObject


Event = (
    ParticipantJoined
    | ParticipantLeft
    | ParticipantUpdated
    | FeedPublished
    | FeedUnpublished
    | FeedUpdated
    | ActiveSpeakers
    | Message
    | Recording
    | LayerChanged
    | LayersWanted
    | DataReceived
    | DataReset
    | Closed
    | Reconnecting
    | Reconnected
    | UnknownEvent
)


def _speakers(body: JsonObject) -> ActiveSpeakers:
    speakers = []
    for raw in _list(body, "speakers"):
        item = _obj(raw, "speaker")
        level = item.get("level", 0.0)
        speakers.append(Speaker(_str(item, "uid"), float(level) if isinstance(level, int | float) else 0.0))
    return ActiveSpeakers(tuple(speakers))


def _feed_event(kind: str, body: JsonObject) -> Event | None:
    match kind:
        case "feed_published":
            return FeedPublished(Feed.from_wire(body.get("feed")))
        case "feed_unpublished":
            return FeedUnpublished(_str(body, "feed_id"))
        case "feed_updated":
            return FeedUpdated(Feed.from_wire(body.get("feed")))
        case "layer_changed":
            rid, reason, paused = _opt_str(body, "rid"), _opt_str(body, "reason"), body.get("paused") is True
            return LayerChanged(_str(body, "feed_id"), rid, reason, paused)
        case "layers_wanted":
            return LayersWanted(_str(body, "feed_id"), tuple(str(r) for r in _list(body, "rids")))
    return None


def parse_event(body: JsonObject) -> Event:
    """The event for a server message without `re`; raises BadRequest on a malformed known type."""
    kind = str(body.get("type"))
    match kind:
        case "participant_joined":
            return ParticipantJoined(Participant.from_wire(body.get("participant")))
        case "participant_left":
            return ParticipantLeft(_str(body, "uid"), _opt_str(body, "reason"))
        case "participant_updated":
            return ParticipantUpdated(Participant.from_wire(body.get("participant")))
        case "active_speakers":
            return _speakers(body)
        case "message":
            return Message.from_wire(body)
        case "recording":
            return Recording(_str(body, "state"), _opt_str(body, "recording_id"))
        case "data_reset":
            dropped = body.get("dropped", 0)
            return DataReset(
                _str(body, "channel", "reliable"),
                dropped if isinstance(dropped, int) and not isinstance(dropped, bool) else 0,
            )
        case "closed":
            code = body.get("code")
            return Closed(_str(body, "reason", "closed"), code if isinstance(code, int) else None)
    event = _feed_event(kind, body)
    return event if event is not None else UnknownEvent(kind, body)


def decode_data_message(raw: bytes, reliable: bool) -> DataReceived | None:
    """A server-to-client binary data message: 2-byte header length, JSON header, payload; None if broken."""
    if len(raw) < 2:
        return None
    size = int.from_bytes(raw[:2], "big")
    if len(raw) < 2 + size:
        return None
    try:
        header: Any = orjson.loads(raw[2 : 2 + size])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(header, dict):
        return None
    sender = header.get("from")
    topic = header.get("topic")
    return DataReceived(
        from_uid=sender if isinstance(sender, str) else "",
        topic=topic if isinstance(topic, str) else None,
        payload=bytes(raw[2 + size :]),
        reliable=reliable,
    )


def encode_data_message(payload: bytes, topic: str | None = None, to: list[str] | None = None) -> bytes:
    """A client-to-server binary data message (header `{"to":[..],"topic":..}`)."""
    header: JsonObject = {}
    if to is not None:
        header["to"] = list(to)
    if topic is not None:
        header["topic"] = topic
    encoded = orjson.dumps(header)
    return len(encoded).to_bytes(2, "big") + encoded + payload
