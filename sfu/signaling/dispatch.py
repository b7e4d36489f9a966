"""The table `type -> (parser, handler)` of a joined socket, and the core handlers (no media).

The media glue extends the table with `dispatcher.register("publish", parse_publish, handle_publish)`.
A handler returns the reply (without `re`) or None; `Dispatcher.dispatch` adds `re`, turns an SfuError
into an `error` reply and anything else into a logged `internal` error, so a bad frame never ends a session.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sfu.errors import BadRequest, Conflict, Forbidden, SfuError
from sfu.signaling import messages
from sfu.signaling.messages import RequestId, check_id, request_id

if TYPE_CHECKING:
    from sfu.server import Server
    from sfu.session.participant import Connection, Participant
    from sfu.session.session import Session

log = logging.getLogger("sfu.signaling")

T = TypeVar("T")
Reply = dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets besides the request: who sent it, over which socket, in which session."""

    server: Server
    session: Session
    participant: Participant
    connection: Connection


Handler = Callable[[Call, T], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    parser: Callable[[dict[str, Any]], Any]
    handler: Callable[[Call, Any], Awaitable[Reply]]


class Dispatcher:
    def __init__(self) -> None:
        self.routes_by_type: dict[str, Route] = {}

    def register(self, kind: str, parser: Callable[[dict[str, Any]], T], handler: Handler[T]) -> None:
        """Adds or replaces the handler of one request type."""
        self.routes_by_type[kind] = Route(parser, handler)

    async def dispatch(self, call: Call, frame: dict[str, Any]) -> dict[str, Any] | None:
        """The reply frame for one decoded request frame (an `error` one on failure), or None."""
        rid = request_id(frame)
        try:
            reply = await self._call(call, frame)
        except SfuError as exc:
            return error_frame(exc, rid)
        except Exception:
            log.exception("handler of %s failed", frame.get("type"))
            return error_frame(SfuError("internal error"), rid)
        if reply is None:
            return None
        return with_re(reply, rid)

    async def _call(self, call: Call, frame: dict[str, Any]) -> Reply:
        kind = frame["type"]
        route = self.routes_by_type.get(kind)
        if route is None:
            messages.parse_request(frame)  # unknown type or bad fields are reported first
            raise BadRequest(f"{kind} is not available on this server")
        check_id(frame)
        return await route.handler(call, route.parser(frame))


def with_re(reply: dict[str, Any], rid: RequestId | None) -> dict[str, Any]:
    if rid is None:
        return reply
    return {"type": reply["type"], "re": rid, **{k: v for k, v in reply.items() if k != "type"}}


def error_frame(exc: SfuError, rid: RequestId | None) -> dict[str, Any]:
    return with_re({"type": "error", **exc.to_wire()}, rid)


# -- core handlers ---------------------------------------------------------------------------------------


async def handle_join_again(call: Call, request: messages.Join) -> Reply:
    raise Conflict("already joined")


async def handle_ping(call: Call, request: messages.Empty) -> Reply:
    return {"type": "pong"}


async def handle_leave(call: Call, request: messages.Empty) -> Reply:
    await call.session.remove_participant(call.participant, "left", 1000)
    return None


async def handle_update(call: Call, request: messages.Update) -> Reply:
    call.session.update_participant(call.participant, name=request.name)
    return {"type": "updated"}


async def handle_refresh(call: Call, request: messages.Refresh) -> Reply:
    """A fresh JWT for the same participant: moves the expiry and applies changed claims live."""
    identity = await call.server.auth.verify_token(request.token)
    participant = call.participant
    if (identity.cid, identity.sid, identity.uid) != (call.session.cid, call.session.sid, participant.uid):
        raise Forbidden("token is for another participant")
    participant.identity = identity
    participant.policy = identity.policy
    participant.watch_expiry(identity.expires_at)
    if (identity.description != participant.description or identity.grants != participant.grants
            or (identity.name is not None and identity.name != participant.name)):
        description = dict(identity.description)
        call.session.update_participant(participant, name=identity.name, description=description,
                                        grants=identity.grants)
    return {"type": "refreshed", "expires_at": identity.expires_at}


def _require_data(participant: Participant) -> None:
    if not participant.grants.data:
        raise Forbidden("token does not grant data")


async def handle_send(call: Call, request: messages.Send) -> Reply:
    participant = call.participant
    _require_data(participant)
    seq = await call.session.pipelines.send(participant.uid, participant.policy, request.data, to=request.to,
                                            pipeline=request.pipeline, persist=request.persist)
    return {"type": "sent", "seq": seq}


async def handle_history(call: Call, request: messages.History) -> Reply:
    _require_data(call.participant)
    page = await call.session.pipelines.page(call.participant.uid, request.pipeline, before=request.before,
                                             after=request.after, limit=request.limit)
    return {"type": "history", "pipeline": request.pipeline, "messages": page}


def core_dispatcher() -> Dispatcher:
    """A dispatcher with everything of PROTOCOL.md except media."""
    dispatcher = Dispatcher()
    dispatcher.register("join", messages.parse_join, handle_join_again)
    dispatcher.register("ping", messages.parse_empty, handle_ping)
    dispatcher.register("leave", messages.parse_empty, handle_leave)
    dispatcher.register("update", messages.parse_update, handle_update)
    dispatcher.register("refresh", messages.parse_refresh, handle_refresh)
    dispatcher.register("send", messages.parse_send, handle_send)
    dispatcher.register("history", messages.parse_history, handle_history)
    return dispatcher
