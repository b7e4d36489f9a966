"""The dispatcher table: registration, `re`, errors, and types without a handler."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from sfu.errors import Forbidden
from sfu.signaling import messages
from sfu.signaling.dispatch import Call, Dispatcher

CALL = cast(Call, None)  # the handlers below never look at it


async def pong(call: Call, request: messages.Empty) -> dict[str, Any] | None:
    return {"type": "pong"}


async def refuse(call: Call, request: messages.Empty) -> dict[str, Any] | None:
    raise Forbidden("not you")


async def test_a_registered_handler_answers_with_re() -> None:
    dispatcher = Dispatcher()
    dispatcher.register("ping", messages.parse_empty, pong)
    assert await dispatcher.dispatch(CALL, {"type": "ping", "id": "a"}) == {"type": "pong", "re": "a"}
    assert await dispatcher.dispatch(CALL, {"type": "ping"}) == {"type": "pong"}


async def test_an_sfu_error_becomes_an_error_reply() -> None:
    dispatcher = Dispatcher()
    dispatcher.register("ping", messages.parse_empty, refuse)
    reply = await dispatcher.dispatch(CALL, {"type": "ping", "id": 3})
    assert reply == {"type": "error", "re": 3, "code": "forbidden", "message": "not you"}


async def test_a_known_type_without_a_handler_is_validated_then_not_available() -> None:
    dispatcher = Dispatcher()
    reply = await dispatcher.dispatch(CALL, {"type": "publish", "id": 1, "sdp": 5})
    assert reply is not None and reply["code"] == "bad_request" and "sdp" in reply["message"]
    reply = await dispatcher.dispatch(CALL, {"type": "publish", "id": 2, "sdp": "v=0"})
    assert reply is not None and reply["message"] == "publish is not available on this server"


async def test_an_unexpected_exception_is_logged_and_answered_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(call: Call, request: messages.Empty) -> dict[str, Any] | None:
        raise KeyError("x")

    dispatcher = Dispatcher()
    dispatcher.register("ping", messages.parse_empty, broken)
    with caplog.at_level(logging.ERROR):
        reply = await dispatcher.dispatch(CALL, {"type": "ping", "id": 1})
    assert reply == {"type": "error", "re": 1, "code": "internal", "message": "internal error"}
    assert caplog.records[0].exc_info is not None
