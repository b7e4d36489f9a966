"""The SDK against the real in-process server: join, presence, data, errors, close, reconnect."""

from __future__ import annotations

import pytest

import client_sdk
from client_sdk import (
    BadRequest,
    Closed,
    Forbidden,
    Message,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    Reconnected,
    Reconnecting,
    Unauthorized,
)
from tests.integration.sdk.conftest import Sessions, TcpProxy
from tests.support import Credentials, RunningServer


async def test_connect_with_a_token_joins_and_reports_who_is_there(
    server: RunningServer, creds: Credentials
) -> None:
    async with await client_sdk.connect(
        server.url, token=creds.token("room", "alice", name="Alice")
    ) as alice:
        assert (alice.sid, alice.uid) == ("room", "alice")
        assert alice.me is not None and alice.me.name == "Alice"
        async with await client_sdk.connect(server.url, token=creds.token("room", "bob")) as bob:
            assert set(bob.participants_by_uid) == {"alice"}
            assert bob.ice_servers == () or all(s.urls for s in bob.ice_servers)


async def test_a_web_only_key_joins_with_its_origin(sessions: Sessions, creds: Credentials) -> None:
    carol = await sessions.connect(key=creds.web_key, session="room", uid="carol", origin=creds.origin)
    assert carol.uid == "carol"


async def test_a_web_only_key_from_another_origin_raises_forbidden(
    sessions: Sessions, creds: Credentials
) -> None:
    with pytest.raises(Forbidden) as raised:
        await sessions.connect(key=creds.web_key, session="room", uid="eve", origin="https://evil.example")
    assert raised.value.code == "forbidden"


async def test_a_token_signed_with_the_wrong_secret_raises_unauthorized(
    sessions: Sessions, creds: Credentials
) -> None:
    token = client_sdk.tokens.create_token(creds.key_id, "sk_" + "x" * 43, "room", "mallory")
    with pytest.raises(Unauthorized):
        await sessions.connect(token=token)


async def test_sdk_tokens_are_accepted_by_the_server(sessions: Sessions, creds: Credentials) -> None:
    token = client_sdk.tokens.create_token(creds.key_id, creds.secret, "room", "dave", name="Dave", ttl=60)
    dave = await sessions.connect(token=token)
    assert dave.me is not None and dave.me.name == "Dave"


async def test_others_see_a_participant_join_update_and_leave(sessions: Sessions, creds: Credentials) -> None:
    alice = await sessions.connect(token=creds.token("room", "alice"))
    events = alice.events()
    bob = await sessions.connect(token=creds.token("room", "bob"))
    joined = await events.next(ParticipantJoined)
    assert joined.participant.uid == "bob"
    await bob.update("Bobby")
    updated = await events.next(ParticipantUpdated)
    assert updated.participant.name == "Bobby"
    await bob.close()
    left = await events.next(ParticipantLeft)
    assert (left.uid, left.reason) == ("bob", "left")
    assert "bob" not in alice.participants_by_uid


async def test_a_sent_message_arrives_and_persists_in_history(sessions: Sessions, creds: Credentials) -> None:
    alice = await sessions.connect(token=creds.token("room", "alice"))
    bob = await sessions.connect(token=creds.token("room", "bob"))
    events = bob.events()
    seq = await alice.send({"text": "hi"}, pipeline="chat", persist=True)
    message = await events.next(Message, lambda m: m.pipeline == "chat")
    assert (message.from_uid, message.seq, message.data) == ("alice", seq, {"text": "hi"})
    page = await bob.history("chat")
    assert [(m.seq, m.data) for m in page] == [(seq, {"text": "hi"})]
    carol = await sessions.connect(token=creds.token("room", "carol"))
    assert [m.data for m in carol.history_by_pipeline["chat"]] == [{"text": "hi"}]


async def test_a_malformed_request_raises_bad_request_and_the_session_goes_on(
    sessions: Sessions, creds: Credentials
) -> None:
    alice = await sessions.connect(token=creds.token("room", "alice"))
    with pytest.raises(BadRequest) as raised:
        await alice.history("chat", limit=0)
    assert raised.value.message
    assert await alice.ping() >= 0


async def test_subscribing_to_a_feed_that_does_not_exist_raises_not_found(
    sessions: Sessions, creds: Credentials
) -> None:
    alice = await sessions.connect(token=creds.token("room", "alice"))
    with pytest.raises(client_sdk.NotFound):
        await alice.subscribe("f_missing")
    assert await alice.ping() >= 0


async def test_sending_without_the_data_grant_raises_forbidden(
    sessions: Sessions, creds: Credentials
) -> None:
    mute = await sessions.connect(token=creds.token("room", "mute", grants={"data": False}))
    with pytest.raises(Forbidden):
        await mute.send("hello")


async def test_close_is_idempotent_and_ends_every_event_stream(
    sessions: Sessions, creds: Credentials
) -> None:
    alice = await sessions.connect(token=creds.token("room", "alice"))
    events = alice.events()
    await alice.close()
    await alice.close()
    seen = [event async for event in events]
    assert isinstance(seen[-1], Closed) and seen[-1].reason == "left"
    with pytest.raises(client_sdk.ConnectionClosed):
        await alice.ping()


async def test_refresh_hands_the_server_a_new_token(sessions: Sessions, creds: Credentials) -> None:
    alice = await sessions.connect(token=creds.token("room", "alice"))
    await alice.refresh(creds.token("room", "alice", ttl_s=7200))
    assert await alice.ping() >= 0


async def test_a_dropped_socket_resumes_and_nobody_sees_a_leave(
    proxy: TcpProxy, sessions: Sessions, creds: Credentials
) -> None:
    alice = await sessions.connect(token=creds.token("room", "alice"))
    watcher = alice.events()
    bob = await sessions.connect(proxy.url, token=creds.token("room", "bob"))
    await watcher.next(ParticipantJoined)
    events = bob.events()
    proxy.drop()
    assert (await events.next(Reconnecting)).attempt == 1
    reconnected = await events.next(Reconnected)
    assert reconnected.resumed is True
    await alice.send("after the drop")
    assert (await events.next(Message)).data == "after the drop"
    assert proxy.connections == 2
    await bob.send("marker")
    seen = []
    async for event in watcher:
        seen.append(event)
        if isinstance(event, Message) and event.data == "marker":
            break
    assert not [e for e in seen if isinstance(e, ParticipantLeft | ParticipantJoined)]
    assert "bob" in alice.participants_by_uid


async def test_a_kicked_session_closes_without_reconnecting(
    sessions: Sessions, creds: Credentials, server: RunningServer
) -> None:
    bob = await sessions.connect(token=creds.token("room", "bob"))
    events = bob.events()
    async with client_sdk.admin.AdminClient(server.url, creds.admin_token()) as admin:
        await admin.kick("room", "bob")
    closed = await events.next(Closed)
    assert closed.code == 4011
    assert bob.closed
