"""Admin REST on live sessions: list, view, end, patch, kick, mute, server messages; scoped per client."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.integration.signaling.peers import Peers
from tests.support import Credentials, RunningServer


async def call(server: RunningServer, creds: Credentials, method: str, path: str,
               body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {creds.admin_token()}"}
    async with aiohttp.ClientSession() as http, http.request(method, server.url + path, json=body,
                                                             headers=headers) as response:
        text = await response.text()
        return response.status, (await response.json() if text else None)


async def test_sessions_are_listed_and_shown_with_participants_and_feeds(
    server: RunningServer, peers: Peers, creds: Credentials
) -> None:
    await peers.join(creds.token("standup", "alice", name="Alice"))
    session = server.server.registry.get(creds.cid, "standup")
    assert session is not None
    feed = session.add_feed("alice", kind="audio", source="microphone")
    status, body = await call(server, creds, "GET", "/v1/sessions")
    assert status == 200
    assert [s["sid"] for s in body["sessions"]] == ["standup"]
    status, body = await call(server, creds, "GET", "/v1/sessions/standup")
    assert status == 200
    assert body["participants"][0]["uid"] == "alice"
    assert body["participants"][0]["feeds"][0]["feed_id"] == feed.feed_id


async def test_one_client_never_sees_another_clients_sessions(server: RunningServer, peers: Peers,
                                                              creds: Credentials) -> None:
    other = await server.credentials()
    await peers.join(creds.token("standup", "alice"))
    status, body = await call(server, other, "GET", "/v1/sessions")
    assert (status, body) == (200, {"sessions": []})
    status, body = await call(server, other, "GET", "/v1/sessions/standup")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, _ = await call(server, other, "DELETE", "/v1/sessions/standup/participants/alice")
    assert status == 404


async def test_rest_needs_an_admin_token(server: RunningServer, creds: Credentials) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/v1/sessions") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {creds.token('s', 'u')}"}
        async with http.get(server.url + "/v1/sessions", headers=headers) as response:
            assert response.status == 403
            assert (await response.json())["error"]["code"] == "forbidden"


async def test_ending_a_session_closes_everyone_4012(
    server: RunningServer, peers: Peers, creds: Credentials,
) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    bob = await peers.join(creds.token("s", "bob"))
    status, _ = await call(server, creds, "DELETE", "/v1/sessions/s")
    assert status == 204
    for peer in (alice, bob):
        assert await peer.closed() == 4012
        assert peer.of_type("closed") == [{"type": "closed", "reason": "session_ended"}]
    assert server.server.registry.get(creds.cid, "s") is None


async def test_kicking_closes_4011_and_others_see_reason_kicked(server: RunningServer, peers: Peers,
                                                                creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    bob = await peers.join(creds.token("s", "bob"))
    status, _ = await call(server, creds, "DELETE", "/v1/sessions/s/participants/bob")
    assert status == 204
    assert await bob.closed() == 4011
    assert bob.of_type("closed") == [{"type": "closed", "reason": "kicked"}]
    left = await alice.event("participant_left")
    assert left == {"type": "participant_left", "uid": "bob", "reason": "kicked"}


async def test_patching_description_and_grants_applies_live(server: RunningServer, peers: Peers,
                                                            creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    bob = await peers.join(creds.token("s", "bob"))
    session = server.server.registry.get(creds.cid, "s")
    assert session is not None
    feed = session.add_feed("bob", kind="video", source="camera")
    await alice.event("feed_published")
    status, body = await call(server, creds, "PATCH", "/v1/sessions/s/participants/bob",
                              {"description": {"role": "speaker"},
                               "grants": {"publish": False, "data": False}})
    assert status == 200
    assert body["grants"]["publish"] is False and body["grants"]["subscribe"] is True
    own = await bob.event("participant_updated")
    assert own["participant"]["description"] == {"role": "speaker"}
    assert own["participant"]["grants"]["data"] is False
    seen = await alice.event("participant_updated")
    assert seen["participant"]["description"] == {"role": "speaker"}
    assert await alice.event("feed_unpublished") == {"type": "feed_unpublished", "feed_id": feed.feed_id}
    assert (await bob.request("send", data=1))["code"] == "forbidden"
    status, body = await call(server, creds, "PATCH", "/v1/sessions/s/participants/bob", {"grants": {"x": 1}})
    assert status == 400 and body["error"]["code"] == "bad_request"


async def test_muting_a_feed_broadcasts_feed_updated(
    server: RunningServer, peers: Peers, creds: Credentials,
) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    bob = await peers.join(creds.token("s", "bob"))
    session = server.server.registry.get(creds.cid, "s")
    assert session is not None
    feed = session.add_feed("bob", kind="audio", source="microphone")
    path = f"/v1/sessions/s/feeds/{feed.feed_id}/mute"
    status, body = await call(server, creds, "POST", path, {"muted": True})
    assert status == 200 and body["muted"] is True
    for peer in (alice, bob):
        assert (await peer.event("feed_updated"))["feed"]["muted"] is True
    status, _ = await call(server, creds, "POST", "/v1/sessions/s/feeds/f_none/mute", {"muted": True})
    assert status == 404


async def test_server_messages_come_from_server(
    server: RunningServer, peers: Peers, creds: Credentials,
) -> None:
    alice = await peers.join(creds.token("s", "alice", policy={"message": []}))
    bob = await peers.join(creds.token("s", "bob"))
    status, body = await call(server, creds, "POST", "/v1/sessions/s/messages",
                              {"data": {"notice": "closing soon"}, "pipeline": "system", "persist": True})
    assert status == 200 and isinstance(body["seq"], int)
    for peer in (alice, bob):
        message = await peer.event("message")
        assert message["from"] == "server" and message["pipeline"] == "system"
    status, body = await call(server, creds, "POST", "/v1/sessions/s/messages", {"data": 1, "to": ["ghost"]})
    assert status == 404
