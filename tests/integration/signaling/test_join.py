"""Both join paths, the `joined` reply, failed joins and their close codes."""

from __future__ import annotations

import time

from tests.integration.signaling.peers import Peers
from tests.support import Credentials, RunningServer


async def test_join_with_a_token_gets_everything_joined_lists(peers: Peers, creds: Credentials) -> None:
    alice = await peers.join(creds.token("standup", "alice-1", name="Alice", description={"role": "host"}))
    joined = alice.joined
    assert joined["re"] == 1
    assert joined["session"] == {"sid": "standup", "cid": creds.cid, "recording": False}
    assert joined["participant"]["uid"] == "alice-1"
    assert joined["participant"]["name"] == "Alice"
    assert joined["participant"]["description"] == {"role": "host"}
    assert joined["participant"]["grants"]["publish"] is True
    assert joined["participants"] == []
    assert joined["ice_servers"] == []
    assert isinstance(joined["resume"], str) and joined["resume"]
    assert joined["history"] == {}


async def test_join_with_a_web_key_and_its_origin_is_accepted(peers: Peers, creds: Credentials) -> None:
    peer = await peers.join(key=creds.web_key, session="standup", uid="web-1", name="Web",
                            origin=creds.origin)
    assert peer.joined["participant"]["uid"] == "web-1"
    assert peer.joined["participant"]["name"] == "Web"
    assert peer.joined["participant"]["grants"]["admin"] is False


async def test_join_with_a_web_key_from_another_origin_is_forbidden_and_closed_4003(
    peers: Peers, creds: Credentials
) -> None:
    peer = await peers.join(key=creds.web_key, session="standup", uid="web-1",
                            origin="https://evil.example.com", expect="error")
    assert peer.frames[0]["code"] == "forbidden"
    assert peer.of_type("closed") == [{"type": "closed", "reason": "forbidden"}]
    assert await peer.closed() == 4003


async def test_join_with_a_bad_token_is_unauthorized_and_closed_4001(peers: Peers) -> None:
    peer = await peers.join("not.a.token", expect="error")
    assert peer.frames[0]["type"] == "error"
    assert (peer.frames[0]["re"], peer.frames[0]["code"]) == (1, "unauthorized")
    assert await peer.closed() == 4001


async def test_a_web_key_session_holds_max_participants(server: RunningServer, peers: Peers) -> None:
    creds = await server.credentials(max_participants=2)
    for uid in ("a", "b"):
        await peers.join(key=creds.web_key, session="s", uid=uid, origin=creds.origin)
    third = await peers.join(key=creds.web_key, session="s", uid="c", origin=creds.origin, expect="error")
    assert third.frames[0]["code"] == "forbidden"
    assert third.frames[0]["message"] == "session is full"
    assert await third.closed() == 4003


async def test_a_frame_before_join_is_answered_and_the_socket_stays_open(
    peers: Peers, creds: Credentials,
) -> None:
    peer = await peers.connect()
    reply = await peer.request("ping")
    assert reply["code"] == "bad_request"
    await peer.send({"type": "join", "id": "j", "token": creds.token("s", "u")})
    assert (await peer.reply("j"))["type"] == "joined"


async def test_no_join_within_the_timeout_closes_4008(tmp_path: object, creds: Credentials) -> None:
    from pathlib import Path

    from tests.integration.signaling.peers import open_peers
    from tests.support import start_server

    assert isinstance(tmp_path, Path)
    async with start_server(tmp_path / "d", join_timeout_s=0.3) as running, open_peers(running) as ps:
        peer = await ps.connect()
        started = time.monotonic()
        assert await peer.closed() == 4008
        assert time.monotonic() - started < 3
        assert peer.of_type("closed") == [{"type": "closed", "reason": "join_timeout"}]


async def test_hidden_participants_are_neither_announced_nor_listed(peers: Peers, creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    bot = await peers.join(creds.token("s", "recorder", grants={"hidden": True}))
    bob = await peers.join(creds.token("s", "bob"))
    await alice.event("participant_joined")
    assert [f["participant"]["uid"] for f in alice.of_type("participant_joined")] == ["bob"]
    assert [p["uid"] for p in bob.joined["participants"]] == ["alice"]
    assert [p["uid"] for p in bot.joined["participants"]] == ["alice"]
    await bot.send({"type": "leave"})
    assert await bot.closed() == 1000
    assert (await alice.request("ping"))["type"] == "pong"
    assert alice.of_type("participant_left") == []
