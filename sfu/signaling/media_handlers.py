"""The media requests of PROTOCOL.md on top of the core dispatcher: publish, subscribe and their kin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sfu.errors import Internal
from sfu.session.participant_media import ParticipantMedia
from sfu.signaling import messages
from sfu.signaling.dispatch import Call, Dispatcher, Reply, core_dispatcher

T = TypeVar("T")


def _media(call: Call) -> ParticipantMedia:
    session_media = call.session.media
    if session_media is None:
        raise Internal("media is not available in this session")
    return session_media.media_for(call.participant)


def _with_id(parse: Callable[[dict[str, Any]], T]) -> Callable[[dict[str, Any]], tuple[T, bool]]:
    """For requests whose reply is optional: remembers whether the frame had an `id` to answer."""

    def parse_noting_id(frame: dict[str, Any]) -> tuple[T, bool]:
        return parse(frame), "id" in frame

    return parse_noting_id


async def handle_publish(call: Call, request: messages.Publish) -> Reply:
    declared = {f.mid: (f.source, f.name) for f in request.feeds}
    answer, feeds = await _media(call).publish(request.sdp, declared)
    return {"type": "published", "sdp": answer, "feeds": feeds}


async def handle_unpublish(call: Call, request: messages.FeedRef) -> Reply:
    _media(call).unpublish(request.feed_id)
    return {"type": "unpublished"}


async def handle_mute(call: Call, request: messages.Mute) -> Reply:
    _media(call).set_muted(request.feed_id, request.muted)
    return {"type": "muted"}


async def handle_subscribe(call: Call, request: messages.FeedList) -> Reply:
    feed_ids = _media(call).subscribe(list(request.feed_ids))
    return {"type": "subscribed", "feed_ids": feed_ids}


async def handle_unsubscribe(call: Call, request: messages.FeedList) -> Reply:
    _media(call).unsubscribe(list(request.feed_ids))
    return {"type": "unsubscribed"}


async def handle_answer(call: Call, request: tuple[messages.Answer, bool]) -> Reply:
    answer, has_id = request
    _media(call).on_answer(answer.negotiation, answer.sdp)
    return {"type": "answered"} if has_id else None


async def handle_candidate(call: Call, request: tuple[messages.Candidate, bool]) -> Reply:
    candidate, has_id = request
    await _media(call).add_candidate(
        candidate.transport, candidate.candidate, candidate.sdp_mid, candidate.sdp_mline_index
    )
    return {"type": "candidate_added"} if has_id else None


async def handle_set_quality(call: Call, request: messages.SetQuality) -> Reply:
    """`layer` or `max_width`/`max_height` pick the highest simulcast layer; `paused` stops forwarding."""
    media = _media(call)
    if request.feed_id not in media.forwarders_by_feed:
        media.set_paused(request.feed_id, False)  # raises NotFound for a feed we do not receive
    media.set_quality(request.feed_id, request.max_width, request.max_height, request.layer)
    if request.paused is not None:
        media.set_paused(request.feed_id, request.paused)
    return {"type": "quality_set"}


def media_dispatcher() -> Dispatcher:
    """Everything of PROTOCOL.md: the core requests plus media."""
    dispatcher = core_dispatcher()
    dispatcher.register("publish", messages.parse_publish, handle_publish)
    dispatcher.register("unpublish", messages.parse_feed_ref, handle_unpublish)
    dispatcher.register("mute", messages.parse_mute, handle_mute)
    dispatcher.register("subscribe", messages.parse_feed_list, handle_subscribe)
    dispatcher.register("unsubscribe", messages.parse_feed_list, handle_unsubscribe)
    dispatcher.register("answer", _with_id(messages.parse_answer), handle_answer)
    dispatcher.register("candidate", _with_id(messages.parse_candidate), handle_candidate)
    dispatcher.register("set_quality", messages.parse_set_quality, handle_set_quality)
    return dispatcher
