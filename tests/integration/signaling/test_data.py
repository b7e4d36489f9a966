"""Data messages: to all, to some, policy, grants, ordering, persistence and history."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.signaling.peers import Peers, open_peers
from tests.support import Credentials, start_server, wait_until


async def test_a_message_without_to_reaches_everyone_but_the_sender(peers: Peers, creds: Credentials) -> None:
    alice, bob, carol = [await peers.join(creds.token("s", uid)) for uid in ("alice", "bob", "carol")]
    sent = await alice.request("send", data={"text": "hi"}, pipeline="chat")
    assert sent["type"] == "sent" and isinstance(sent["seq"], int)
    for peer in (bob, carol):
        message = await peer.event("message")
        assert message["from"] == "alice"
        assert message["pipeline"] == "chat"
        assert message["seq"] == sent["seq"]
        assert message["data"] == {"text": "hi"}
        assert isinstance(message["ts"], int)
    assert alice.of_type("message") == []


async def test_a_message_with_to_reaches_only_those(peers: Peers, creds: Credentials) -> None:
    alice, bob, carol = [await peers.join(creds.token("s", uid)) for uid in ("alice", "bob", "carol")]
    await alice.request("send", data=1, to=["bob"])
    await bob.event("message")
    assert (await carol.request("ping"))["type"] == "pong"
    assert carol.of_type("message") == []
    assert (await bob.event("message"))["pipeline"] == "default"


async def test_the_senders_message_policy_filters_and_forbids(peers: Peers, creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice", policy={"message": ["bob*"]}))
    bob = await peers.join(creds.token("s", "bob-1"))
    carol = await peers.join(creds.token("s", "carol"))
    await alice.request("send", data="broadcast")
    await bob.event("message")
    denied = await alice.request("send", data="direct", to=["carol"])
    assert denied["code"] == "forbidden"
    assert (await carol.request("ping"))["type"] == "pong"
    assert carol.of_type("message") == []


async def test_sending_to_someone_absent_is_not_found(peers: Peers, creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    assert (await alice.request("send", data=1, to=["ghost"]))["code"] == "not_found"


async def test_without_the_data_grant_sending_is_forbidden(peers: Peers, creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice", grants={"data": False}))
    assert (await alice.request("send", data=1))["code"] == "forbidden"


async def test_data_larger_than_16_kib_is_too_large_and_the_socket_stays(
    peers: Peers, creds: Credentials,
) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    reply = await alice.request("send", data="x" * 17000)
    assert reply["code"] == "too_large"
    assert (await alice.request("ping"))["type"] == "pong"


async def test_every_recipient_sees_a_pipeline_in_seq_order(peers: Peers, creds: Credentials) -> None:
    senders = [await peers.join(creds.token("s", f"sender-{i}")) for i in range(4)]
    watcher = await peers.join(creds.token("s", "watcher"))
    for i in range(10):
        for peer in senders:
            await peer.send({"type": "send", "data": i, "pipeline": "p"})
    await wait_until(lambda: len(watcher.of_type("message")) == 40)
    seqs = [m["seq"] for m in watcher.of_type("message")]
    assert seqs == sorted(seqs) and len(set(seqs)) == 40


async def test_a_late_joiner_gets_persisted_history_visible_to_it(peers: Peers, creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    bob = await peers.join(creds.token("s", "bob"))
    await alice.request("send", data="public", pipeline="chat", persist=True)
    await alice.request("send", data="for bob", pipeline="chat", persist=True, to=["bob"])
    await alice.request("send", data="not kept", pipeline="chat")
    await bob.event("message", data="not kept")
    carol = await peers.join(creds.token("s", "carol"))
    assert [m["data"] for m in carol.joined["history"]["chat"]] == ["public"]
    await bob.send({"type": "leave"})
    await bob.closed()
    bob2 = await peers.join(creds.token("s", "bob"))
    assert [m["data"] for m in bob2.joined["history"]["chat"]] == ["public", "for bob"]


async def test_history_pages_with_before_and_after(peers: Peers, creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    seqs = [(await alice.request("send", data=i, persist=True))["seq"] for i in range(10)]
    page = await alice.request("history", before=seqs[5], limit=3)
    assert [m["data"] for m in page["messages"]] == [2, 3, 4]
    page = await alice.request("history", after=seqs[7])
    assert [m["data"] for m in page["messages"]] == [8, 9]
    assert (await alice.request("history", before=1, after=2))["code"] == "bad_request"


async def test_history_survives_a_server_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    async with start_server(data_dir) as running, open_peers(running) as peers:
        creds = await running.credentials()
        alice = await peers.join(creds.token("room", "alice"))
        first = await alice.request("send", data="before restart", persist=True, pipeline="chat")
    async with start_server(data_dir) as running, open_peers(running) as peers:
        token = creds.token("room", "bob")
        bob = await peers.join(token)
        assert [m["data"] for m in bob.joined["history"]["chat"]] == ["before restart"]
        again = await bob.request("send", data="after", pipeline="chat")
        assert again["seq"] > first["seq"]


async def test_concurrent_sends_get_distinct_growing_seqs(peers: Peers, creds: Credentials) -> None:
    alice = await peers.join(creds.token("s", "alice"))
    await asyncio.gather(*(alice.send({"type": "send", "id": f"m{i}", "data": i}) for i in range(20)))
    await wait_until(lambda: len(alice.of_type("sent")) == 20)
    seqs = [f["seq"] for f in alice.of_type("sent")]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20
