"""The server's own consent checks (sfu/media/freshness.py) against real aiortc peers over 127.0.0.1: they
are answered and media keeps flowing, a client that goes silent is closed after the (lowered) timeout,
and event-loop stalls that outlast aioice's 0.5 s per-check deadline do not cost the peer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvloop

from sfu.media import freshness
from sfu.media.engine import MediaEngine
from sfu.media.freshness import TOTALS
from sfu.media.publisher import PublishedTrack
from tests.integration.media.peers import LOOPBACK, ClientPeer, PacketTrack, encode_vp8, wait_until

STALL_S = 1.5
STALLS = 7  # more than aioice's CONSENT_FAILURES (6) in a row


@pytest.fixture
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A check every 0.4-0.6 s; an unanswered one is repeated after 0.5 s."""
    monkeypatch.setattr(freshness, "CHECK_INTERVAL_S", 0.5)
    monkeypatch.setattr(freshness, "RETRY_S", 0.5)
    yield


def server_connection(transport: Any) -> Any:
    return transport._hooked[0].transport._connection


def client_connection(client: ClientPeer) -> Any:
    return client.pc.getTransceivers()[0].receiver.transport.transport._connection


def quiet_client_checks(client: ClientPeer) -> None:
    """The client stops its own consent checks (aioice's): only the server's are under test here."""

    async def no_checks() -> None:
        return None

    connection = client_connection(client)
    connection.query_consent = no_checks
    task = connection._query_consent_task
    if task is not None:
        task.cancel()


async def publish(engine: MediaEngine, client: ClientPeer) -> tuple[Any, list[PublishedTrack], PacketTrack]:
    video = PacketTrack("video", encode_vp8(90))
    pub = engine.create_publisher()
    tracks = await client.publish(pub, [video])
    await wait_until(lambda: pub.sink.connected and client.pc.connectionState == "connected")
    video.go.set()
    return pub, tracks, video


async def test_the_servers_checks_are_answered_by_a_real_client_and_media_keeps_flowing(
    engine: MediaEngine, new_client: Callable[[], ClientPeer], quick_checks: None
) -> None:
    publisher = new_client()
    pub, tracks, _ = await publish(engine, publisher)
    subscriber = new_client()
    sub = engine.create_subscriber()
    sub.add(tracks[0].receiver, tag="feed")
    await subscriber.answer(sub)
    await wait_until(lambda: sub.sink.connected)
    sent, answered, expired = TOTALS.checks_sent, TOTALS.responses, TOTALS.expired
    await wait_until(lambda: TOTALS.responses >= answered + 6)  # both peers, every ~0.5 s
    frames = subscriber.received.frames["video"]
    await wait_until(lambda: subscriber.received.frames["video"] >= frames + 20)
    assert TOTALS.checks_sent >= sent + 6 and TOTALS.expired == expired
    for transport in (pub, sub):
        connection = server_connection(transport)
        check = connection._sfu_consent
        assert check.fresh_at > freshness.now_s() - 5 and not check.stopped
        task = connection._query_consent_task  # aioice's checker: started with the no-op, or never
        assert task is None or task.done()
        assert "query_consent" in vars(connection)
    assert pub.state == "connected" and sub.state == "connected"


async def test_a_client_that_goes_silent_is_closed_after_the_consent_timeout(
    engine: MediaEngine, new_client: Callable[[], ClientPeer], quick_checks: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(freshness, "CONSENT_TIMEOUT_S", 2.0)
    client = new_client()
    pub, _, _ = await publish(engine, client)
    quiet_client_checks(client)
    answered, expired = TOTALS.responses, TOTALS.expired
    await wait_until(lambda: TOTALS.responses >= answered + 2)
    assert pub.state == "connected"
    for protocol in client_connection(client)._protocols:  # the client's sockets drop everything
        protocol.datagram_received = lambda data, addr: None
    await wait_until(lambda: pub.state in ("failed", "closed"), within_s=20)
    assert TOTALS.expired == expired + 1
    assert server_connection(pub)._closed


def test_event_loop_stalls_longer_than_a_check_deadline_do_not_lose_the_peer(quick_checks: None) -> None:
    """The server's loop (uvloop, as `sfu serve` runs) stalls 1.5 s right after the client answered each
    of STALLS consent checks: uvloop runs due timers before it reads the sockets, so aioice's checker
    (a 0.5 s deadline per check, 6 failures close) loses the peer; the server's checker only counts the
    time since the last authenticated answer."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_stalled_session())


async def _stalled_session() -> None:
    engine = MediaEngine(ice_hosts=LOOPBACK)
    client = ClientPeer()
    try:
        pub, tracks, _ = await publish(engine, client)
        quiet_client_checks(client)
        stalls = [0]
        for protocol in client_connection(client)._protocols:
            original = protocol.datagram_received

            def answer_then_stall(data: bytes, addr: Any, original: Any = original) -> None:
                original(data, addr)
                if data[:2] == b"\x00\x01" and stalls[0] < STALLS:  # a consent check from the server
                    stalls[0] += 1
                    time.sleep(STALL_S)  # a busy worker: nothing else runs meanwhile

            protocol.datagram_received = answer_then_stall
        expired = TOTALS.expired
        await wait_until(lambda: stalls[0] == STALLS or pub.state != "connected", within_s=60)
        assert pub.state == "connected", f"peer lost after {stalls[0]} stalls"
        receiver = tracks[0].receiver
        packets = receiver.packets
        await wait_until(lambda: pub.state != "connected" or receiver.packets >= packets + 30)
        assert pub.state == "connected" and pub.sink.connected
        answered = TOTALS.responses
        await wait_until(lambda: TOTALS.responses >= answered + 3)
        assert TOTALS.expired == expired and pub.state == "connected"
    finally:
        await client.close()
        await engine.close()
    await asyncio.sleep(0.1)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert left == [], left
