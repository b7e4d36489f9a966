"""Bad frames get `error` and keep the socket; limits close it with 4009; each error code on the wire."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from sfu.signaling import messages
from sfu.signaling.dispatch import Call
from sfu.signaling.ws import DISPATCHER_KEY, OUTBOX_FRAMES, Socket
from tests.integration.signaling.peers import Peers, open_peers
from tests.support import Credentials, RunningServer, start_server, wait_until


@pytest.mark.parametrize(
    ("frame", "code", "in_message"),
    [
        ({"type": "nope", "id": 5}, "bad_request", "unknown type"),
        ({"type": "send", "id": 5}, "bad_request", "data"),
        ({"type": "send", "id": 5, "data": 1, "to": "bob"}, "bad_request", "to"),
        ({"type": "send", "id": 5, "data": 1, "pipeline": "bad pipeline"}, "bad_request", "pipeline"),
        ({"type": "update", "id": 5, "name": 3}, "bad_request", "name"),
        ({"type": "history", "id": 5, "limit": "10"}, "bad_request", "limit"),
        ({"type": "mute", "id": 5, "feed_id": "f_1"}, "bad_request", "muted"),
        ({"type": "publish", "id": 5, "sdp": 1}, "bad_request", "sdp"),
        ({"type": "join", "id": 5, "token": "x"}, "conflict", "already joined"),
        ({"type": "send", "id": 5, "data": "x" * 20000}, "too_large", "data"),
    ],
)
async def test_a_bad_request_is_answered_with_an_error_naming_the_field(
    peers: Peers, creds: Credentials, frame: dict[str, Any], code: str, in_message: str
) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    await alice.send(frame)
    reply = await alice.reply(5)
    assert reply["type"] == "error"
    assert reply["code"] == code
    assert in_message in reply["message"]
    assert (await alice.request("ping"))["type"] == "pong"


async def test_frames_that_are_not_json_objects_get_an_error_without_re(
    peers: Peers, creds: Credentials,
) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    for raw in ("{", "[1,2]", '"text"', '{"id": 3}'):
        await alice.ws.send_str(raw)
    await alice.ws.send_bytes(b"\x00\x01")
    pong = await alice.request("ping")
    assert pong["type"] == "pong"
    errors = alice.of_type("error")
    assert len(errors) == 5
    assert all(e["code"] == "bad_request" and "re" not in e for e in errors)


async def test_a_frame_over_the_size_limit_closes_4009(peers: Peers, creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    bob = await peers.join(creds.token("s", "bob"))
    await alice.ws.send_str('{"type":"ping","pad":"' + "x" * 70000 + '"}')
    assert await alice.closed() == 4009
    assert alice.of_type("error")[0]["code"] == "too_large"
    assert alice.of_type("closed") == [{"type": "closed", "reason": "too_large"}]
    await bob.event("participant_left", uid="alice")


async def test_too_many_frames_per_second_close_4009(tmp_path: Path) -> None:
    async with start_server(tmp_path / "d", frames_per_s=5.0, frame_burst=10) as running, \
            open_peers(running) as peers:
        creds = await running.credentials()
        alice = await peers.join(creds.token("s", "alice"))
        for _ in range(30):
            if alice.ws.closed:
                break
            await alice.send({"type": "ping"})
        assert await alice.closed() == 4009
        assert alice.of_type("error")[-1]["code"] == "rate_limited"
        assert alice.of_type("closed") == [{"type": "closed", "reason": "rate_limited"}]


async def test_a_failing_handler_is_answered_internal_and_logged(
    server: RunningServer, peers: Peers, creds: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(call: Call, request: messages.Empty) -> dict[str, Any] | None:
        raise RuntimeError("boom")

    server.app[DISPATCHER_KEY].register("ping", messages.parse_empty, broken)
    alice = await peers.join(creds.token("s", "alice"))
    with caplog.at_level(logging.ERROR):
        reply = await alice.request("ping")
    assert reply == {"type": "error", "re": reply["re"], "code": "internal", "message": "internal error"}
    assert "boom" in caplog.text
    assert (await alice.request("update", name="still here"))["type"] == "updated"


async def test_a_client_that_does_not_read_is_cut_off_and_its_outbox_stays_bounded(
    server: RunningServer, creds: Credentials
) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        await ws.send_str(orjson.dumps({"type": "join", "id": 1, "token": creds.token("s", "lazy")}).decode())
        assert (await ws.receive_json())["type"] == "joined"
        session = server.server.registry.get(creds.cid, "s")
        assert session is not None
        lazy = session.participant("lazy")
        socket = lazy.connection
        assert isinstance(socket, Socket)
        big = {"type": "message", "from": "server", "pipeline": "p", "seq": 0, "ts": 0, "data": "x" * 16000}
        for _ in range(200):  # up to 200 * 100 * 16 kB offered; never read by the client
            for _ in range(100):
                lazy.send(big)
            assert len(socket._outbox) <= OUTBOX_FRAMES + 2
            if socket.close_code is not None:
                break
            await asyncio.sleep(0.01)  # let the sender write until the TCP buffers are full
        assert socket.close_code == 4009
        await wait_until(lambda: session.participants_by_uid.get("lazy") is None)
