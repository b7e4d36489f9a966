"""Wire types of PROTOCOL.md: every client request parsed and validated in one place, stdlib + orjson only.

A parser takes the decoded frame (a dict) and returns a frozen request object or raises BadRequest naming
the field, so handlers never see a wrong type. Media requests are validated here too, although their
effect lives elsewhere, so that the whole wire vocabulary is in one file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from sfu.errors import BadRequest, TooLarge

RequestId = str | int
MAX_ID_CHARS = 128
MAX_TOKEN_CHARS = 16 * 1024
MAX_NAME_CHARS = 256
MAX_SDP_CHARS = 60 * 1024
MAX_DATA_BYTES = 16 * 1024
MAX_RECIPIENTS = 256
MAX_FEEDS = 64
MAX_HISTORY_LIMIT = 1000
DEFAULT_PIPELINE = "default"
SERVER_UID = "server"
"""`from` of messages the REST API sends on behalf of the server."""

_IDENT_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
_PIPELINE_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
SOURCES = ("camera", "microphone", "screen", "screen_audio", "custom")
LAYERS = ("q", "h", "f")


# -- field readers ---------------------------------------------------------------------------------------


def _str(frame: dict[str, Any], name: str, *, required: bool = True, max_chars: int = MAX_NAME_CHARS,
         ) -> str | None:
    value = frame.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    if len(value) > max_chars:
        raise BadRequest(f"{name} is longer than {max_chars} characters")
    return value


def _req_str(frame: dict[str, Any], name: str, max_chars: int = MAX_NAME_CHARS) -> str:
    value = _str(frame, name, max_chars=max_chars)
    assert value is not None
    return value


def _ident(frame: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = _str(frame, name, required=required)
    if value is not None and not _IDENT_RE.fullmatch(value):
        raise BadRequest(f"{name} must be 1-128 characters of [A-Za-z0-9_.:@-]")
    return value


def _bool(frame: dict[str, Any], name: str, default: bool | None = None) -> bool:
    value = frame.get(name)
    if value is None:
        if default is None:
            raise BadRequest(f"{name} is required")
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be a boolean")
    return value


def _int(frame: dict[str, Any], name: str, *, low: int = 0, high: int = 2**53) -> int | None:
    value = frame.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def _ident_list(
    frame: dict[str, Any], name: str, *, required: bool, max_items: int
) -> tuple[str, ...] | None:
    value = frame.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if not isinstance(value, list):
        raise BadRequest(f"{name} must be a list")
    if len(value) > max_items:
        raise BadRequest(f"{name} has more than {max_items} entries")
    for item in value:
        if not isinstance(item, str) or not _IDENT_RE.fullmatch(item):
            raise BadRequest(f"{name} entries must be 1-128 characters of [A-Za-z0-9_.:@-]")
    return tuple(dict.fromkeys(value))


def _pipeline(frame: dict[str, Any]) -> str:
    value = _str(frame, "pipeline", required=False)
    if value is None:
        return DEFAULT_PIPELINE
    if not _PIPELINE_RE.fullmatch(value):
        raise BadRequest("pipeline must be 1-64 characters of [A-Za-z0-9_.:@-]")
    return value


def _object(frame: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = frame.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be an object")
    return value


def check_data(data: Any) -> None:
    """`data` of a message: any JSON, at most 16 KiB encoded."""
    if data is None:
        raise BadRequest("data is required")
    try:
        size = len(orjson.dumps(data))
    except (TypeError, orjson.JSONEncodeError):
        raise BadRequest("data must be JSON") from None
    if size > MAX_DATA_BYTES:
        raise TooLarge(f"data is larger than {MAX_DATA_BYTES} bytes encoded")


# -- frames ----------------------------------------------------------------------------------------------


def decode_frame(raw: str | bytes) -> dict[str, Any]:
    """One text frame as a JSON object with a string `type`."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise BadRequest("frame must be a JSON object")
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise BadRequest("type is required and must be a string")
    return frame


def request_id(frame: dict[str, Any]) -> RequestId | None:
    """The frame's `id` if it is a usable one (string or integer), else None."""
    value = frame.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and -(2**53) <= value <= 2**53:
        return value
    if isinstance(value, str) and len(value) <= MAX_ID_CHARS:
        return value
    return None


def check_id(frame: dict[str, Any]) -> None:
    if "id" in frame and frame["id"] is not None and request_id(frame) is None:
        raise BadRequest(f"id must be a string of at most {MAX_ID_CHARS} characters or an integer")


# -- requests --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    token: str | None
    key: str | None
    session: str | None
    uid: str | None
    name: str | None
    resume: str | None
    auto_subscribe: bool
    sdk: dict[str, Any] | None


def parse_join(frame: dict[str, Any]) -> Join:
    token = _str(frame, "token", required=False, max_chars=MAX_TOKEN_CHARS)
    key = _str(frame, "key", required=False)
    if (token is None) == (key is None):
        raise BadRequest("join needs exactly one of token or key")
    session = _ident(frame, "session", required=key is not None)
    uid = _ident(frame, "uid", required=key is not None)
    sdk = _object(frame, "sdk")
    if sdk is not None and len(orjson.dumps(sdk)) > 1024:
        raise BadRequest("sdk is larger than 1024 bytes")
    return Join(
        token=token,
        key=key,
        session=session,
        uid=uid,
        name=_str(frame, "name", required=False),
        resume=_str(frame, "resume", required=False, max_chars=1024),
        auto_subscribe=_bool(frame, "auto_subscribe", True),
        sdk=sdk,
    )


@dataclass(frozen=True, slots=True)
class Empty:
    """Requests with nothing besides `type` and `id`: ping, leave."""


def parse_empty(frame: dict[str, Any]) -> Empty:
    return Empty()


@dataclass(frozen=True, slots=True)
class Refresh:
    token: str


def parse_refresh(frame: dict[str, Any]) -> Refresh:
    return Refresh(_req_str(frame, "token", MAX_TOKEN_CHARS))


@dataclass(frozen=True, slots=True)
class Update:
    name: str


def parse_update(frame: dict[str, Any]) -> Update:
    return Update(_req_str(frame, "name"))


@dataclass(frozen=True, slots=True)
class Send:
    data: Any
    to: tuple[str, ...] | None
    pipeline: str
    persist: bool


def parse_send(frame: dict[str, Any]) -> Send:
    data = frame.get("data")
    check_data(data)
    return Send(
        data=data,
        to=_ident_list(frame, "to", required=False, max_items=MAX_RECIPIENTS),
        pipeline=_pipeline(frame),
        persist=_bool(frame, "persist", False),
    )


@dataclass(frozen=True, slots=True)
class History:
    pipeline: str
    before: int | None
    after: int | None
    limit: int


def parse_history(frame: dict[str, Any]) -> History:
    before = _int(frame, "before")
    after = _int(frame, "after")
    if before is not None and after is not None:
        raise BadRequest("history takes before or after, not both")
    limit = _int(frame, "limit", low=1, high=MAX_HISTORY_LIMIT)
    return History(_pipeline(frame), before, after, 50 if limit is None else limit)


# media requests: validated here, handled by the media glue


@dataclass(frozen=True, slots=True)
class PublishFeed:
    mid: str
    source: str
    name: str


@dataclass(frozen=True, slots=True)
class Publish:
    sdp: str
    feeds: tuple[PublishFeed, ...]


def parse_publish(frame: dict[str, Any]) -> Publish:
    sdp = _req_str(frame, "sdp", MAX_SDP_CHARS)
    raw = frame.get("feeds", [])
    if not isinstance(raw, list):
        raise BadRequest("feeds must be a list")
    if len(raw) > MAX_FEEDS:
        raise BadRequest(f"feeds has more than {MAX_FEEDS} entries")
    feeds = []
    for item in raw:
        if not isinstance(item, dict):
            raise BadRequest("feeds entries must be objects")
        mid = _str(item, "mid", max_chars=32)
        source = _str(item, "source", required=False) or "custom"
        if source not in SOURCES:
            raise BadRequest(f"feeds.source must be one of {', '.join(SOURCES)}")
        assert mid is not None
        feeds.append(PublishFeed(mid, source, _str(item, "name", required=False) or ""))
    if len({f.mid for f in feeds}) != len(feeds):
        raise BadRequest("feeds has a repeated mid")
    return Publish(sdp, tuple(feeds))


@dataclass(frozen=True, slots=True)
class FeedRef:
    feed_id: str


def parse_feed_ref(frame: dict[str, Any]) -> FeedRef:
    return FeedRef(_req_str(frame, "feed_id", 64))


@dataclass(frozen=True, slots=True)
class Mute:
    feed_id: str
    muted: bool


def parse_mute(frame: dict[str, Any]) -> Mute:
    return Mute(_req_str(frame, "feed_id", 64), _bool(frame, "muted"))


@dataclass(frozen=True, slots=True)
class FeedList:
    feed_ids: tuple[str, ...]


def parse_feed_list(frame: dict[str, Any]) -> FeedList:
    ids = _ident_list(frame, "feed_ids", required=True, max_items=MAX_RECIPIENTS)
    assert ids is not None
    return FeedList(ids)


@dataclass(frozen=True, slots=True)
class Answer:
    sdp: str
    negotiation: int


def parse_answer(frame: dict[str, Any]) -> Answer:
    negotiation = _int(frame, "negotiation")
    if negotiation is None:
        raise BadRequest("negotiation is required")
    return Answer(_req_str(frame, "sdp", MAX_SDP_CHARS), negotiation)


@dataclass(frozen=True, slots=True)
class Candidate:
    transport: Literal["publisher", "subscriber"]
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


def parse_candidate(frame: dict[str, Any]) -> Candidate:
    transport = _req_str(frame, "transport")
    if transport not in ("publisher", "subscriber"):
        raise BadRequest("transport must be publisher or subscriber")
    body = _object(frame, "candidate")
    if body is None:
        raise BadRequest("candidate is required")
    text = _str(body, "candidate", max_chars=1024)
    assert text is not None
    mid = _str(body, "sdpMid", required=False, max_chars=32)
    index = _int(body, "sdpMLineIndex", high=1024)
    return Candidate("publisher" if transport == "publisher" else "subscriber", text, mid, index)


@dataclass(frozen=True, slots=True)
class SetQuality:
    feed_id: str
    max_width: int | None
    max_height: int | None
    layer: str | None
    paused: bool | None


def parse_set_quality(frame: dict[str, Any]) -> SetQuality:
    layer = _str(frame, "layer", required=False)
    if layer is not None and layer not in LAYERS:
        raise BadRequest("layer must be one of q, h, f")
    paused = frame.get("paused")
    if paused is not None and not isinstance(paused, bool):
        raise BadRequest("paused must be a boolean")
    return SetQuality(
        feed_id=_req_str(frame, "feed_id", 64),
        max_width=_int(frame, "max_width", high=16384),
        max_height=_int(frame, "max_height", high=16384),
        layer=layer,
        paused=paused,
    )


Parser = Callable[[dict[str, Any]], Any]

PARSERS: dict[str, Parser] = {
    "join": parse_join,
    "refresh": parse_refresh,
    "update": parse_update,
    "ping": parse_empty,
    "leave": parse_empty,
    "send": parse_send,
    "history": parse_history,
    "publish": parse_publish,
    "unpublish": parse_feed_ref,
    "mute": parse_mute,
    "subscribe": parse_feed_list,
    "unsubscribe": parse_feed_list,
    "answer": parse_answer,
    "candidate": parse_candidate,
    "set_quality": parse_set_quality,
}
"""Every request type of PROTOCOL.md and its parser."""


def parse_request(frame: dict[str, Any]) -> Any:
    """The typed request of a decoded frame; BadRequest for an unknown `type` or a bad field."""
    kind = frame["type"]
    parser = PARSERS.get(kind)
    if parser is None:
        shown = kind if len(kind) <= 32 else kind[:32] + "..."
        raise BadRequest(f"unknown type {shown!r}")
    check_id(frame)
    return parser(frame)
