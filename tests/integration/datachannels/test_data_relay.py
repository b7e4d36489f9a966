"""Binary data channels through the server with real aiortc peers (client_sdk sessions).

PROTOCOL.md "Binary data channels": payloads arrive intact, reliable ones in order with none missing;
`to`, `policy.message`, `grants.data` and the 15 KiB limit apply; what breaks a rule is dropped and
counted on the server and affects nobody else.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc import VideoStreamTrack

import client_sdk
from client_sdk import Reconnected, TooLarge
from sfu.media.datachannels import MAX_PAYLOAD_BYTES, DataDropReason, encode_client_message
from tests.integration.datachannels.support import (
    Inbox,
    checksummed,
    relay_of,
    verify,
    wait_channels_open,
)
from tests.integration.sdk.conftest import Sessions, TcpProxy
from tests.support import Credentials, RunningServer, start_server, wait_until


class Inboxes:
    def __init__(self) -> None:
        self.opened: list[Inbox] = []

    def __call__(self, session: client_sdk.Session) -> Inbox:
        inbox = Inbox(session)
        self.opened.append(inbox)
        return inbox


@pytest.fixture
async def inboxes() -> AsyncIterator[Inboxes]:
    opened = Inboxes()
    try:
        yield opened
    finally:
        for inbox in opened.opened:
            await inbox.close()


class ColorBars(VideoStreamTrack):
    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(np.zeros((120, 160, 3), dtype=np.uint8), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


async def _join(sessions: Sessions, creds: Credentials, uid: str, **claims: object) -> client_sdk.Session:
    return await sessions.connect(token=creds.token("room", uid, **claims))


async def test_random_binary_payloads_arrive_intact_and_reliable_ones_in_order(
    server: RunningServer, sessions: Sessions, creds: Credentials, inboxes: Inboxes
) -> None:
    alice = await _join(sessions, creds, "alice")
    receivers = [inboxes(await _join(sessions, creds, uid)) for uid in ("bob", "carol")]
    rng = random.Random(7)
    count = 300
    for seq in range(count):
        await alice.publish_data(checksummed(seq, rng.randint(36, MAX_PAYLOAD_BYTES)), topic="blob")
    relay = relay_of(server, creds)
    await wait_channels_open(relay, ["bob", "carol"])
    for inbox in receivers:
        await wait_until(inbox.has(count, reliable=True), timeout_s=20)
        assert [verify(p) for p in inbox.payloads(reliable=True)] == list(range(count))
        assert all(e.from_uid == "alice" and e.topic == "blob" for e in inbox.data if e.reliable)
    # Lossy copies are dropped by design while a recipient has a reliable backlog (LOSSY_CONGESTED), so
    # they are sent once the 2.3 MB above has drained: on an idle loopback nearly all must arrive.
    for seq in range(50):
        await alice.publish_data(checksummed(seq, rng.randint(36, 2000)), reliable=False, topic="lossy")
    for inbox in receivers:
        await wait_until(inbox.has(40, reliable=False))
        lossy = [verify(p) for p in inbox.payloads(reliable=False)]
        assert set(lossy) <= set(range(50)) and all(e.topic == "lossy" for e in inbox.data if not e.reliable)
    counters = relay.counters
    # Every copy is accounted for (a lossy message may still be on its way from alice to the server).
    await wait_until(lambda: counters.messages_relayed + counters.drops[DataDropReason.LOSSY_CONGESTED]
                     == 2 * count + 2 * 50)
    assert sum(counters.drops) == counters.drops[DataDropReason.LOSSY_CONGESTED]  # only lossy copies drop


async def test_to_and_the_senders_message_policy_decide_the_recipients(
    server: RunningServer, sessions: Sessions, creds: Credentials, inboxes: Inboxes
) -> None:
    alice = await _join(sessions, creds, "alice", policy={"message": ["bob", "dave-*"]})
    bob = await _join(sessions, creds, "bob")
    by_uid = {"bob": inboxes(bob)}
    for uid in ("carol", "dave-1"):
        by_uid[uid] = inboxes(await _join(sessions, creds, uid))
    await alice.publish_data(b"everyone-allowed", topic="a")
    await alice.publish_data(b"to-carol", to=["carol"])
    await alice.publish_data(b"to-dave", to=["dave-1", "nobody"])
    await bob.publish_data(b"bob-to-carol", to=["carol"])
    relay = relay_of(server, creds)
    await wait_until(lambda: len(by_uid["carol"].data) == 1 and len(by_uid["dave-1"].data) == 2)
    await wait_until(lambda: len(by_uid["bob"].data) == 1)
    assert by_uid["bob"].payloads() == [b"everyone-allowed"]
    assert by_uid["carol"].payloads() == [b"bob-to-carol"]
    assert by_uid["carol"].data[0].from_uid == "bob"
    assert by_uid["dave-1"].payloads() == [b"everyone-allowed", b"to-dave"]
    assert relay.counters.drops[DataDropReason.POLICY] == 2  # carol, and "nobody" (not allowed either)
    await bob.publish_data(b"ghost", to=["nobody"])
    await wait_until(lambda: relay.counters.drops[DataDropReason.UNKNOWN_RECIPIENT] == 1)


async def test_oversize_malformed_and_forbidden_messages_are_dropped_and_counted(
    server: RunningServer, sessions: Sessions, creds: Credentials, inboxes: Inboxes
) -> None:
    alice = await _join(sessions, creds, "alice")
    mallory = await _join(sessions, creds, "mallory", grants={"data": False})
    bob = inboxes(await _join(sessions, creds, "bob"))
    carol = inboxes(await _join(sessions, creds, "carol"))
    with pytest.raises(TooLarge):
        await alice.publish_data(bytes(MAX_PAYLOAD_BYTES + 1))
    await alice.publish_data(b"first")
    await mallory.publish_data(b"forbidden")
    await mallory.publish_data(b"forbidden", reliable=False)
    channels = alice._data  # what a broken client would put on the wire
    assert alice._publisher is not None
    await channels.send_raw(alice._publisher, encode_client_message(bytes(MAX_PAYLOAD_BYTES + 1)))
    await channels.send_raw(alice._publisher, b"\x00\x09{broken}")
    await alice.publish_data(b"last")
    relay = relay_of(server, creds)
    for inbox in (bob, carol):
        await wait_until(inbox.has(2))
        assert inbox.payloads() == [b"first", b"last"]
    drops = relay.counters.drops
    await wait_until(lambda: drops[DataDropReason.FORBIDDEN] == 2)
    assert drops[DataDropReason.OVERSIZE] == 1 and drops[DataDropReason.MALFORMED] == 1
    assert relay.counters.drop_bytes[DataDropReason.OVERSIZE] > MAX_PAYLOAD_BYTES
    assert relay.counters.messages_relayed == 6  # first and last, to bob, carol and mallory


async def test_a_participant_that_may_not_publish_media_still_sends_and_receives_data(
    server: RunningServer, sessions: Sessions, creds: Credentials, inboxes: Inboxes
) -> None:
    viewer = await _join(sessions, creds, "viewer", grants={"publish": False, "subscribe": False})
    viewer_inbox = inboxes(viewer)
    host = await _join(sessions, creds, "host")
    host_inbox = inboxes(host)
    await viewer.publish_data(b"question", topic="qa")
    await wait_until(lambda: host_inbox.payloads() == [b"question"])
    await host.publish_data(b"answer", topic="qa", to=["viewer"])
    await wait_until(lambda: viewer_inbox.payloads() == [b"answer"])
    assert viewer_inbox.data[0].from_uid == "host"


async def test_data_channels_join_a_session_that_already_forwards_media(
    server: RunningServer, sessions: Sessions, creds: Credentials, inboxes: Inboxes
) -> None:
    bob = await _join(sessions, creds, "bob")
    bob_inbox = inboxes(bob)
    alice = await _join(sessions, creds, "alice")
    video = await alice.publish(ColorBars())
    remote = await bob.subscribe(video.feed_id)
    await remote.track.recv()
    await alice.publish_data(b"after-media")  # renegotiates alice's publisher and bob's subscriber
    await wait_until(lambda: bob_inbox.payloads() == [b"after-media"], timeout_s=10)
    frame = await remote.track.recv()  # media still flows after both renegotiations
    assert isinstance(frame, av.VideoFrame)
    late = inboxes(await _join(sessions, creds, "late"))
    await bob.publish_data(b"hello-late", to=["late"])
    await wait_until(lambda: late.payloads() == [b"hello-late"], timeout_s=10)


async def test_data_flows_again_after_a_reconnect_that_could_not_resume(tmp_path: Path) -> None:
    async with start_server(tmp_path / "data", resume_window_s=0.3) as running:
        creds = await running.credentials()
        proxy = TcpProxy(running.port)
        await proxy.start()
        opened = Sessions(running.url)
        bob_inbox: Inbox | None = None
        try:
            bob = await opened.connect(token=creds.token("room", "bob"))
            bob_inbox = Inbox(bob)
            alice = await opened.connect(proxy.url, token=creds.token("room", "alice"))
            alice_inbox = Inbox(alice)
            await alice.publish_data(b"before")
            await wait_until(lambda: bob_inbox is not None and bob_inbox.payloads() == [b"before"])
            events = alice.events()
            proxy.refusing = True
            proxy.drop()
            await wait_until(lambda: "alice" not in bob.participants_by_uid, timeout_s=10)
            proxy.refusing = False
            reconnected = await events.next(Reconnected, timeout_s=20)
            assert reconnected.resumed is False
            await alice.publish_data(b"after")  # new transports: the channels open again
            await wait_until(lambda: bob_inbox is not None and bob_inbox.payloads() == [b"before", b"after"],
                             timeout_s=10)
            await bob.publish_data(b"back", to=["alice"])
            await wait_until(lambda: alice_inbox.payloads() == [b"back"], timeout_s=10)
            await alice_inbox.close()
        finally:
            if bob_inbox is not None:
                await bob_inbox.close()
            await opened.close_all()
            await proxy.close()
