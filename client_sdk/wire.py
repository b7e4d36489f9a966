"""The SDK's own copy of the PROTOCOL.md wire shapes: frozen dataclasses parsed leniently.

The server may add fields (PROTOCOL.md allows it), so parsers ignore what they do not know and fill
documented defaults for what is absent; a field of the wrong type raises `BadRequest` (a broken reply).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from client_sdk.errors import BadRequest

JsonObject = dict[str, Any]
SOURCES = ("camera", "microphone", "screen", "screen_audio", "custom")
DEFAULT_PIPELINE = "default"


def _obj(raw: object, what: str) -> JsonObject:
    if not isinstance(raw, dict):
        raise BadRequest(f"{what} must be an object")
    return raw


def _str(raw: JsonObject, name: str, default: str | None = None) -> str:
    value = raw.get(name, default)
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def _opt_str(raw: JsonObject, name: str) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def _int(raw: JsonObject, name: str, default: int | None = None) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer")
    return value


def _list(raw: JsonObject, name: str) -> list[Any]:
    value = raw.get(name, [])
    if not isinstance(value, list):
        raise BadRequest(f"{name} must be a list")
    return value


@dataclass(frozen=True, slots=True)
class Layer:
    """One simulcast encoding of a video feed, lowest first."""

    rid: str
    width: int | None = None
    height: int | None = None
    max_bitrate: int | None = None

    @classmethod
    def from_wire(cls, raw: object) -> Layer:
        body = _obj(raw, "layer")
        return cls(_str(body, "rid"), body.get("width"), body.get("height"), body.get("max_bitrate"))


@dataclass(frozen=True, slots=True)
class Feed:
    """One published track of a participant, as the server announces it."""

    feed_id: str
    uid: str
    kind: str
    source: str
    name: str | None = None
    muted: bool = False
    codec: str | None = None
    layers: tuple[Layer, ...] = ()

    @classmethod
    def from_wire(cls, raw: object) -> Feed:
        body = _obj(raw, "feed")
        return cls(
            feed_id=_str(body, "feed_id"),
            uid=_str(body, "uid", ""),
            kind=_str(body, "kind", ""),
            source=_str(body, "source", "custom"),
            name=_opt_str(body, "name"),
            muted=bool(body.get("muted", False)),
            codec=_opt_str(body, "codec"),
            layers=tuple(Layer.from_wire(layer) for layer in _list(body, "layers")),
        )


@dataclass(frozen=True, slots=True)
class Grants:
    """What a participant may do; defaults are PROTOCOL.md's for an absent grant."""

    publish: bool | tuple[str, ...] = True
    subscribe: bool = True
    data: bool = True
    record: bool = False
    admin: bool = False
    hidden: bool = False
    force_relay: bool = False

    @classmethod
    def from_wire(cls, raw: object) -> Grants:
        body = _obj(raw, "grants") if raw is not None else {}
        publish = body.get("publish", True)
        return cls(
            publish=tuple(publish) if isinstance(publish, list) else bool(publish),
            subscribe=bool(body.get("subscribe", True)),
            data=bool(body.get("data", True)),
            record=bool(body.get("record", False)),
            admin=bool(body.get("admin", False)),
            hidden=bool(body.get("hidden", False)),
            force_relay=bool(body.get("force_relay", False)),
        )


@dataclass(frozen=True, slots=True)
class Participant:
    """Another participant (or, in `Session.me`, this one); `feeds` is what it publishes."""

    uid: str
    name: str | None = None
    description: JsonObject = field(default_factory=dict)
    feeds: tuple[Feed, ...] = ()
    grants: Grants | None = None

    @classmethod
    def from_wire(cls, raw: object) -> Participant:
        body = _obj(raw, "participant")
        description = body.get("description") or {}
        return cls(
            uid=_str(body, "uid"),
            name=_opt_str(body, "name"),
            description=_obj(description, "description"),
            feeds=tuple(Feed.from_wire(f) for f in _list(body, "feeds")),
            grants=Grants.from_wire(body["grants"]) if body.get("grants") is not None else None,
        )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    sid: str
    cid: str = ""
    recording: bool = False

    @classmethod
    def from_wire(cls, raw: object) -> SessionInfo:
        body = _obj(raw, "session")
        return cls(_str(body, "sid"), _str(body, "cid", ""), bool(body.get("recording", False)))


@dataclass(frozen=True, slots=True)
class IceServer:
    """One entry of `joined.ice_servers`: the only ICE servers the SDK ever uses."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    @classmethod
    def from_wire(cls, raw: object) -> IceServer:
        body = _obj(raw, "ice server")
        urls = body.get("urls", [])
        return cls(
            urls=(urls,) if isinstance(urls, str) else tuple(str(u) for u in urls),
            username=_opt_str(body, "username"),
            credential=_opt_str(body, "credential"),
        )


@dataclass(frozen=True, slots=True)
class Message:
    """A data message: an event when it arrives, and the item type of `history`."""

    from_uid: str
    pipeline: str
    seq: int
    ts: int
    data: Any
    to: tuple[str, ...] | None = None

    @classmethod
    def from_wire(cls, raw: object) -> Message:
        body = _obj(raw, "message")
        to = body.get("to")
        return cls(
            from_uid=_str(body, "from", ""),
            pipeline=_str(body, "pipeline", DEFAULT_PIPELINE),
            seq=_int(body, "seq", 0),
            ts=_int(body, "ts", 0),
            data=body.get("data"),
            to=tuple(to) if isinstance(to, list) else None,
        )


@dataclass(frozen=True, slots=True)
class Joined:
    """The `joined` reply: who we are, who is there, how to reach the media server."""

    session: SessionInfo
    participant: Participant
    participants: tuple[Participant, ...]
    ice_servers: tuple[IceServer, ...]
    resume: str | None
    history: dict[str, tuple[Message, ...]]
    resumed: bool | None = None

    @classmethod
    def from_wire(cls, raw: object) -> Joined:
        body = _obj(raw, "joined")
        history = _obj(body.get("history") or {}, "history")
        resumed = body.get("resumed")
        return cls(
            session=SessionInfo.from_wire(body.get("session")),
            participant=Participant.from_wire(body.get("participant")),
            participants=tuple(Participant.from_wire(p) for p in _list(body, "participants")),
            ice_servers=tuple(IceServer.from_wire(s) for s in _list(body, "ice_servers")),
            resume=_opt_str(body, "resume"),
            history={
                str(pipeline): tuple(Message.from_wire(m) for m in messages if isinstance(m, dict))
                for pipeline, messages in history.items()
                if isinstance(messages, list)
            },
            resumed=resumed if isinstance(resumed, bool) else None,
        )
