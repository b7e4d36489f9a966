"""How participants end: leave, replacement, resume inside and outside the window, expiry, idle, linger."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.signaling.peers import Peers, open_peers
from tests.support import Credentials, RunningServer, start_server, wait_until


async def test_leave_closes_1000_and_others_see_reason_left(peers: Peers, creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    bob = await peers.join(creds.token("s", "bob"))
    await bob.send({"type": "leave"})
    assert await bob.closed() == 1000
    left = await alice.event("participant_left")
    assert left == {"type": "participant_left", "uid": "bob", "reason": "left"}


async def test_a_second_join_with_the_same_uid_replaces_the_first(peers: Peers, creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    first = await peers.join(creds.token("s", "bob"))
    second = await peers.join(creds.token("s", "bob"))
    assert await first.closed() == 4010
    assert first.of_type("closed") == [{"type": "closed", "reason": "replaced"}]
    assert (await second.request("ping"))["type"] == "pong"
    await alice.event("participant_left", reason="replaced")
    assert [f["participant"]["uid"] for f in alice.of_type("participant_joined")] == ["bob", "bob"]


async def test_resume_inside_the_window_keeps_the_participant_and_others_see_nothing(
    peers: Peers, creds: Credentials, server: RunningServer
) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    bob = await peers.join(creds.token("s", "bob"))
    session = server.server.registry.get(creds.cid, "s")
    assert session is not None
    feed = session.add_feed("bob", kind="video", source="camera", name="cam")
    session.participants_by_uid["bob"].subscriptions.add("f_other")
    resume = bob.joined["resume"]
    await bob.close()
    await wait_until(lambda: not session.participants_by_uid["bob"].connected)
    await alice.request("send", data="while you were away")
    again = await peers.join(creds.token("s", "bob"), resume=resume)
    assert again.joined["resumed"] is True
    assert [f["feed_id"] for f in again.joined["participant"]["feeds"]] == [feed.feed_id]
    assert session.participants_by_uid["bob"].subscriptions == {"f_other"}
    missed = await again.event("message")
    assert missed["data"] == "while you were away"
    assert (await alice.request("ping"))["type"] == "pong"
    assert alice.of_type("participant_left") == []
    assert alice.of_type("feed_unpublished") == []
    assert len(alice.of_type("participant_joined")) == 1


async def test_after_the_resume_window_others_see_a_timeout_leave(tmp_path: Path) -> None:
    async with start_server(tmp_path / "d", resume_window_s=0.3) as running, open_peers(running) as peers:
        creds = await running.credentials()
        alice = await peers.join(creds.token("s", "alice"))
        bob = await peers.join(creds.token("s", "bob"))
        resume = bob.joined["resume"]
        await bob.close()
        left = await alice.event("participant_left")
        assert left == {"type": "participant_left", "uid": "bob", "reason": "timeout"}
        again = await peers.join(creds.token("s", "bob"), resume=resume)
        assert again.joined["resumed"] is False
        await alice.event("participant_joined", wait_s=2)
        assert len(alice.of_type("participant_joined")) == 2


async def test_an_expired_token_closes_4013_unless_refreshed(peers: Peers, creds: Credentials) -> None:
    expiring = await peers.join(creds.token("s", "alice", ttl_s=1))
    refreshed = await peers.join(creds.token("s", "bob", ttl_s=1))
    reply = await refreshed.request("refresh", token=creds.token("s", "bob", ttl_s=600))
    assert reply["type"] == "refreshed"
    assert await expiring.closed(wait_s=5) == 4013
    assert expiring.of_type("closed") == [{"type": "closed", "reason": "token_expired"}]
    await refreshed.event("participant_left", uid="alice", reason="token_expired")
    assert (await refreshed.request("ping"))["type"] == "pong"
    assert not refreshed.ws.closed


async def test_refresh_with_a_token_for_another_uid_is_forbidden(peers: Peers, creds: Credentials) -> None:
    bob = await peers.join(creds.token("s", "bob"))
    reply = await bob.request("refresh", token=creds.token("s", "mallory"))
    assert reply["code"] == "forbidden"
    assert (await bob.request("ping"))["type"] == "pong"


async def test_a_silent_socket_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    async with start_server(tmp_path / "d", idle_timeout_s=0.3) as running, open_peers(running) as peers:
        creds = await running.credentials()
        alice = await peers.join(creds.token("s", "alice"))
        assert await alice.closed() == 4008
        assert alice.of_type("closed") == [{"type": "closed", "reason": "idle_timeout"}]


async def test_an_empty_session_ends_after_the_linger_time(tmp_path: Path) -> None:
    async with start_server(tmp_path / "d", session_linger_s=0.2) as running, open_peers(running) as peers:
        creds = await running.credentials()
        alice = await peers.join(creds.token("s", "alice"))
        registry = running.server.registry
        assert registry.get(creds.cid, "s") is not None
        await alice.send({"type": "leave"})
        await alice.closed()
        await wait_until(lambda: registry.get(creds.cid, "s") is None)


async def test_a_join_during_linger_keeps_the_session(tmp_path: Path) -> None:
    async with start_server(tmp_path / "d", session_linger_s=0.3) as running, open_peers(running) as peers:
        creds = await running.credentials()
        alice = await peers.join(creds.token("s", "alice"))
        session = running.server.registry.get(creds.cid, "s")
        await alice.send({"type": "leave"})
        await alice.closed()
        await peers.join(creds.token("s", "bob"))
        await asyncio.sleep(0.5)  # past the linger time: nothing to poll for, the session must still be there
        assert running.server.registry.get(creds.cid, "s") is session
