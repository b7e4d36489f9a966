"""The subscriber offer FIFO when a client does not answer (sfu/session/participant_media.py).

The subscriber is a raw protocol peer (WebSocket + aiortc) that leaves chosen offers unanswered; the
publisher is an SDK session sending real VP8 and Opus that aiortc encodes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aiortc import (
    AudioStreamTrack,
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

import client_sdk
from sfu.media import bridge
from sfu.session import participant_media
from sfu.session.participant_media import ParticipantMedia
from tests.integration.media.peers import LOOPBACK
from tests.integration.sdk.test_media import ColorBars
from tests.integration.signaling.peers import Peer, open_peers
from tests.support import Credentials, RunningServer, wait_until

TIMEOUT_S = 1.0  # the answers here take ~0.1 s; long enough for a loaded CI machine


@pytest.fixture(autouse=True)
def short_answer_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(participant_media, "ANSWER_TIMEOUT_S", TIMEOUT_S)


class ForgetfulSubscriber:
    """Answers the server's subscriber offers in order, except those whose negotiation is in `ignore`."""

    def __init__(self, peer: Peer, ignore: set[int]) -> None:
        self.peer = peer
        self.ignore = ignore
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tracks: list[MediaStreamTrack] = []
        self.answered: list[int] = []
        self.pc.on("track", self.tracks.append)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        peers = [self.peer]
        while True:
            if self.peer is not peers[-1]:  # resumed on a new socket: offers of the old one still count
                peers.append(self.peer)
            for offer in [o for p in peers for o in p.of_type("offer")]:
                if offer["negotiation"] in self.ignore or offer["negotiation"] in self.answered:
                    continue
                await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
                with bridge.ice_hosts_scope(LOOPBACK):
                    await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self.peer.send({"type": "answer", "negotiation": offer["negotiation"],
                                      "sdp": self.pc.localDescription.sdp})
                self.answered.append(offer["negotiation"])
            await asyncio.sleep(0.02)

    async def frame(self, kind: str) -> Any:
        track = next(t for t in self.tracks if t.kind == kind)
        return await asyncio.wait_for(track.recv(), 10)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await bridge.close_peer_connection(self.pc)


def media_of(server: RunningServer, uid: str) -> ParticipantMedia:
    for session in server.server.registry.sessions_by_key.values():
        participant = session.participants_by_uid.get(uid)
        if participant is not None:
            return next(a for a in participant.attachments if isinstance(a, ParticipantMedia))
    raise AssertionError(f"{uid} is in no session")


async def _publisher(server: RunningServer, creds: Credentials) -> tuple[client_sdk.Session, list[str]]:
    alice = client_sdk.Session(server.url, token=creds.token("room", "alice"))
    await alice.join()
    feeds = await alice.publish_many([(ColorBars(), "camera", None), (AudioStreamTrack(), None, None)])
    return alice, [f.feed_id for f in feeds]


async def test_an_unanswered_offer_is_replaced_and_later_offers_still_go_out(
    server: RunningServer, creds: Credentials
) -> None:
    before = participant_media.TOTALS.answer_timeouts
    alice, (video, audio) = await _publisher(server, creds)
    bob = None
    try:
        async with open_peers(server) as peers:
            peer = await peers.join(creds.token("room", "bob"), auto_subscribe=False)
            bob = ForgetfulSubscriber(peer, ignore={1})
            assert (await peer.request("subscribe", feed_ids=[video]))["type"] == "subscribed"
            error = await peer.event("error", negotiation=1)
            assert error["code"] == "conflict" and "offer 1" in error["message"] and "re" not in error
            replaced = await peer.event("offer", negotiation=2)
            assert replaced["feeds"] == (await peer.event("offer", negotiation=1))["feeds"]
            assert list(replaced["feeds"].values()) == [video]
            await wait_until(lambda: bob is not None and bob.answered == [2])
            late = await peer.request("answer", negotiation=1, sdp=bob.pc.localDescription.sdp)
            assert late["type"] == "error" and late["code"] == "conflict"
            frame = await bob.frame("video")
            assert (frame.width, frame.height) == (320, 240)
            # the FIFO goes on: a later subscription is offered and answered at once
            assert (await peer.request("subscribe", feed_ids=[audio]))["type"] == "subscribed"
            offer = await peer.event("offer", negotiation=3)
            assert set(offer["feeds"].values()) == {video, audio}
            await wait_until(lambda: bob is not None and bob.answered == [2, 3])
            sound = await bob.frame("audio")
            assert sound.sample_rate == 48000
            media = media_of(server, "bob")
            assert media.answer_timeouts == 1 and not media.subscriber_failed
            assert participant_media.TOTALS.answer_timeouts == before + 1
            metrics = await (await peers.http.get(f"{server.url}/metrics")).text()
            assert "sfu_subscriber_answer_timeouts_total" in metrics
    finally:
        if bob is not None:
            await bob.close()
        await alice.close()


async def test_a_subscriber_that_never_answers_is_closed_after_the_retries(
    server: RunningServer, creds: Credentials
) -> None:
    closed_before = participant_media.TOTALS.subscribers_closed
    alice, (_, audio) = await _publisher(server, creds)
    tries = participant_media.MAX_OFFER_RETRIES + 1
    bob = None
    try:
        async with open_peers(server) as peers:
            peer = await peers.join(creds.token("room", "bob"))  # auto_subscribe: alice's two feeds
            bob = ForgetfulSubscriber(peer, ignore=set(range(1, 100)))
            final = await peer.event("error", negotiation=tries, wait_s=10 * tries * TIMEOUT_S)
            assert "subscriber transport is closed" in final["message"]
            assert [o["negotiation"] for o in peer.of_type("offer")] == list(range(1, tries + 1))
            assert len(peer.of_type("error")) == tries
            media = media_of(server, "bob")
            assert media.subscriber_failed and media.subscriber is None and not media.forwarders_by_feed
            assert participant_media.TOTALS.subscribers_closed == closed_before + 1
            refused = await peer.request("subscribe", feed_ids=[audio])
            assert refused["type"] == "error" and refused["code"] == "conflict"
            await asyncio.sleep(3 * TIMEOUT_S)
            extra = await alice.publish(ColorBars())  # auto-subscribers get it; the failed one is skipped
            assert extra.feed_id
            await asyncio.sleep(TIMEOUT_S)
            assert len(peer.of_type("offer")) == tries  # no more offers
            assert (await peer.request("ping"))["type"] == "pong"  # the session itself goes on
    finally:
        if bob is not None:
            await bob.close()
        await alice.close()


async def test_the_answer_wait_restarts_when_the_socket_resumes(
    server: RunningServer, creds: Credentials
) -> None:
    before = participant_media.TOTALS.answer_timeouts
    alice, (video, _) = await _publisher(server, creds)
    bob = None
    try:
        async with open_peers(server) as peers:
            token = creds.token("room", "bob")
            first = await peers.join(token, auto_subscribe=False)
            bob = ForgetfulSubscriber(first, ignore={1})
            assert (await first.request("subscribe", feed_ids=[video]))["type"] == "subscribed"
            await first.event("offer", negotiation=1)
            await first.close()  # gone before answering (the offer came): no timeout while away
            await asyncio.sleep(3 * TIMEOUT_S)
            assert participant_media.TOTALS.answer_timeouts == before
            second = await peers.join(token, auto_subscribe=False, resume=first.joined["resume"])
            assert second.joined.get("resumed") is not False
            bob.peer = second
            bob.ignore.clear()  # the client answers the offer it got before the drop, on the new socket
            await wait_until(lambda: bob is not None and bob.answered == [1])
            frame = await bob.frame("video")
            assert (frame.width, frame.height) == (320, 240)
            assert participant_media.TOTALS.answer_timeouts == before
            assert not second.of_type("error") and not second.of_type("offer")
    finally:
        if bob is not None:
            await bob.close()
        await alice.close()
