"""A participant's two transports: what it publishes (it offers) and what it receives (we offer).

Subscriber offers go out one at a time: a FIFO task waits for the `answer` to offer N before it builds
offer N+1, so two negotiations never interleave (PROTOCOL.md "Two transports"). Changes made while an offer
is out are collected and go into the next one.

An offer unanswered for `ANSWER_TIMEOUT_S` (counted while one socket stays connected: while the participant
has none the wait is paused, and a resumed socket starts it again) is replaced: the client gets an
`error` naming the negotiation, and a new offer with the current feeds goes out (aiortc builds it on the
pending one: nothing forwarded changes until an answer comes). After `MAX_OFFER_RETRIES` replaced offers in
a row the subscriber side is closed: its forwarders stop, later `subscribe`s are refused with `conflict`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sfu.errors import BadRequest, Conflict, Forbidden, NotFound
from sfu.media.forwarder import Forwarder
from sfu.media.publisher import PublishedTrack, PublisherTransport
from sfu.media.selector import layer_for_size
from sfu.media.subscriber import SubscriberTransport
from sfu.session.feed import FeedKind, Layer

if TYPE_CHECKING:
    from sfu.media.receiver import Receiver
    from sfu.session.participant import Participant
    from sfu.session.session_media import SessionMedia

log = logging.getLogger("sfu.session.media")

DEFAULT_SOURCE_BY_KIND = {"audio": "microphone", "video": "camera"}
ANSWER_TIMEOUT_S: Final = 10.0
"""How long a subscriber offer waits for its answer before it is offered again (read per offer)."""
MAX_OFFER_RETRIES: Final = 3
"""Offers replaced in a row (each after ANSWER_TIMEOUT_S) before the subscriber side is closed."""


@dataclass(slots=True)
class NegotiationCounters:
    answer_timeouts: int = 0  # subscriber offers replaced because no answer came in time
    subscribers_closed: int = 0  # subscriber sides closed after MAX_OFFER_RETRIES replaced offers


TOTALS = NegotiationCounters()
"""Process-wide, read by /metrics (sfu/metrics.py)."""


class ParticipantMedia:
    """Owned by its Participant (as an attachment): `close()` closes both transports and the FIFO."""

    def __init__(self, session_media: SessionMedia, participant: Participant) -> None:
        self.session_media = session_media
        self.participant = participant
        self.publisher: PublisherTransport | None = None
        self.subscriber: SubscriberTransport | None = None
        self.feed_ids_by_mid: dict[str, str] = {}
        self.forwarders_by_feed: dict[str, Forwarder] = {}
        self.negotiation = 0
        self.closed = False
        self._unpublished_mids: set[str] = set()
        self._publish_lock = asyncio.Lock()
        self._pending_answer: tuple[int, asyncio.Future[str]] | None = None
        self._offer_wanted = asyncio.Event()
        self._negotiator: asyncio.Task[None] | None = None
        self.answer_timeouts = 0  # of this participant, in all
        self.subscriber_failed = False  # closed after unanswered offers: no more subscriptions

    # -- publishing --------------------------------------------------------------------------------------

    async def publish(
        self, sdp: str, declared: dict[str, tuple[str, str]]
    ) -> tuple[str, list[dict[str, str]]]:
        """Applies a publisher offer; `declared` is {mid: (source, name)}. Returns the answer and feeds.

        Raises Forbidden before negotiating when a declared source is not granted, so a refused publish
        changes nothing.
        """
        grants = self.participant.grants
        for source, _name in declared.values():
            if not grants.can_publish(source):
                raise Forbidden(f"token does not grant publish of {source}")
        if not grants.publishes_anything and not grants.data:  # data only: a transport for data channels
            raise Forbidden("token does not grant publish")
        async with self._publish_lock:
            self._check_open()
            if self.publisher is None:
                self.publisher = self.session_media.engine.create_publisher()
                self.publisher.on_layers_changed = self._on_layers_changed
                self.publisher.on_layers_wanted = self._on_layers_wanted
                self.publisher.on_data_channel = self._on_data_channel
            try:
                answer, tracks = await self.publisher.negotiate(sdp)
            except (ValueError, KeyError, IndexError, AssertionError) as exc:
                raise BadRequest(f"sdp offer was not accepted: {exc or type(exc).__name__}") from None
            self._unpublished_mids -= set(declared)
            feeds = self._apply_tracks(tracks, declared)
        return answer, [{"mid": mid, "feed_id": feed_id} for mid, feed_id in feeds]

    def _apply_tracks(
        self, tracks: list[PublishedTrack], declared: dict[str, tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Feeds for new mids, `feed_unpublished` for mids the offer no longer sends."""
        session = self.session_media.session
        by_mid = {t.mid: t for t in tracks}
        for mid in [m for m in self.feed_ids_by_mid if m not in by_mid]:
            session.remove_feed(self.feed_ids_by_mid.pop(mid))
        out: list[tuple[str, str]] = []
        for track in tracks:
            if track.mid in self._unpublished_mids:
                continue
            feed_id = self.feed_ids_by_mid.get(track.mid)
            if feed_id is None:
                source, name = declared.get(track.mid, (DEFAULT_SOURCE_BY_KIND.get(track.kind, "custom"), ""))
                if not self.participant.grants.can_publish(source):
                    continue
                kind: FeedKind = "audio" if track.kind == "audio" else "video"
                feed = session.add_feed(self.participant.uid, kind=kind, source=source, name=name,
                                        codec=track.codec)
                feed_id = self.feed_ids_by_mid[track.mid] = feed.feed_id
                self.session_media.on_feed_receiver(feed_id, track.receiver)
            out.append((track.mid, feed_id))
        return out

    def own_feed(self, feed_id: str) -> str:
        """The mid of one of this participant's feeds, or NotFound."""
        for mid, fid in self.feed_ids_by_mid.items():
            if fid == feed_id:
                return mid
        raise NotFound(f"feed {feed_id} is not published by {self.participant.uid}")

    def unpublish(self, feed_id: str) -> None:
        mid = self.own_feed(feed_id)
        del self.feed_ids_by_mid[mid]
        self._unpublished_mids.add(mid)
        self.session_media.session.remove_feed(feed_id)

    def set_muted(self, feed_id: str, muted: bool) -> None:
        self.own_feed(feed_id)
        self.session_media.set_feed_muted(feed_id, muted)

    def feed_removed(self, feed_id: str) -> None:
        """The session dropped one of our feeds (grants changed, admin): stop routing its mid."""
        for mid, fid in list(self.feed_ids_by_mid.items()):
            if fid == feed_id:
                del self.feed_ids_by_mid[mid]
                self._unpublished_mids.add(mid)

    # -- subscribing -------------------------------------------------------------------------------------

    def subscribe(self, feed_ids: list[str]) -> list[str]:
        """Adds forwarders for feeds (checks grants and policy first); the next offer carries them."""
        participant = self.participant
        if not participant.grants.subscribe:
            raise Forbidden("token does not grant subscribe")
        if self.subscriber_failed:
            raise Conflict("subscriber transport was closed after unanswered offers: join again")
        session = self.session_media.session
        for feed_id in feed_ids:
            feed = session.feeds_by_id.get(feed_id)
            if feed is None or feed_id not in self.session_media.receivers_by_feed:
                raise NotFound(f"feed {feed_id} is not in the session")
            if not participant.policy.allows_subscribe(feed.uid):
                raise Forbidden(f"policy does not allow subscribing to {feed.uid}")
        added = [feed_id for feed_id in feed_ids if self._add_forwarder(feed_id)]
        if added:
            self._want_offer()
        return list(feed_ids)

    def _add_forwarder(self, feed_id: str) -> bool:
        if feed_id in self.forwarders_by_feed or self.closed or self.subscriber_failed:
            return False
        receiver: Receiver = self.session_media.receivers_by_feed[feed_id]
        if self.subscriber is None:
            self.subscriber = self.session_media.engine.create_subscriber()
        forwarder = self.subscriber.add(receiver, tag=feed_id, stream_id=feed_id)
        forwarder.on_layer_changed = self._on_layer_changed
        feed = self.session_media.session.feeds_by_id.get(feed_id)
        if feed is not None:  # the allocator's priority: screen share, active speakers, others
            forwarder.screen = feed.source == "screen"
            forwarder.speaking = feed.uid in self.session_media.speaker_uids
        self.forwarders_by_feed[feed_id] = forwarder
        self.participant.subscriptions.add(feed_id)
        return True

    def unsubscribe(self, feed_ids: list[str]) -> None:
        removed = False
        for feed_id in feed_ids:
            forwarder = self.forwarders_by_feed.pop(feed_id, None)
            self.participant.subscriptions.discard(feed_id)
            if forwarder is not None and self.subscriber is not None:
                self.subscriber.remove(forwarder)
                removed = True
        if removed:
            self._want_offer()

    # -- simulcast ---------------------------------------------------------------------------------------

    def _on_layers_changed(self, receiver: Receiver, layers: list[dict[str, Any]]) -> None:
        """The publisher transport saw simulcast layers appear or disappear: update `feed.layers`."""
        feed_id = self.feed_ids_by_mid.get(receiver.mid)
        if feed_id is not None and feed_id in self.session_media.session.feeds_by_id:
            self.session_media.session.update_feed(feed_id, layers=[Layer(**x) for x in layers])

    def _on_layers_wanted(self, receiver: Receiver) -> None:
        """Dynacast: tell the publisher which of its layers somebody receives (PROTOCOL.md)."""
        feed_id = self.feed_ids_by_mid.get(receiver.mid)
        if feed_id is not None:
            self.participant.send({"type": "layers_wanted", "feed_id": feed_id, "rids": receiver.wanted_rids})

    def _on_layer_changed(self, forwarder: Forwarder, rid: str, reason: str) -> None:
        feed_id = next((f for f, fw in self.forwarders_by_feed.items() if fw is forwarder), None)
        if feed_id is not None:
            # rid null with paused true: the allocator paused the video (its lowest layer does not fit)
            paused = forwarder.bandwidth_paused
            wire_rid = None if paused or not rid else rid
            self.participant.send({"type": "layer_changed", "feed_id": feed_id, "rid": wire_rid,
                                   "reason": reason, "paused": paused})

    def set_quality(
        self, feed_id: str, max_width: int | None, max_height: int | None, layer: str | None
    ) -> None:
        """set_quality's `layer` or `max_width`/`max_height`: the highest simulcast layer to receive."""
        forwarder = self.forwarders_by_feed.get(feed_id)
        if forwarder is None:
            raise NotFound(f"not subscribed to feed {feed_id}")
        layers = forwarder.layers
        if layer is not None:
            rids = [r.rid for r in layers]
            index = rids.index(layer) if layer in rids else "qhf".find(layer)
        elif max_width is not None or max_height is not None:
            index = layer_for_size([(r.width, r.height) for r in layers], max_width, max_height)
        else:
            return
        forwarder.set_max_layer(max(index, 0), time.monotonic_ns())

    def set_paused(self, feed_id: str, paused: bool) -> None:
        forwarder = self.forwarders_by_feed.get(feed_id)
        if forwarder is None:
            raise NotFound(f"not subscribed to feed {feed_id}")
        forwarder.set_paused(paused)
        if not paused:
            forwarder.receiver.request_key_frame(time.monotonic_ns())

    # -- data channels (sfu/session/data_relay.py) -------------------------------------------------------

    def _on_data_channel(self, channel: Any) -> None:
        self.session_media.data_relay.on_publisher_channel(self.participant, channel)

    def subscriber_transport(self) -> SubscriberTransport:
        """The subscriber transport, created on first use (by a forwarder or the data relay).

        After `subscriber_failed` a new one is never offered: the data relay's channels on it stay closed.
        """
        if self.subscriber is None:
            self.subscriber = self.session_media.engine.create_subscriber()
        return self.subscriber

    def renegotiate(self) -> None:
        """Something besides forwarders (the data relay's channels) changed the subscriber transport."""
        self._want_offer()

    # -- subscriber negotiation FIFO ---------------------------------------------------------------------

    def _want_offer(self) -> None:
        self._offer_wanted.set()
        if self._negotiator is None and not self.closed and not self.subscriber_failed:
            name = f"negotiate-{self.participant.uid}"
            self._negotiator = asyncio.create_task(self._negotiate(), name=name)

    async def _negotiate(self) -> None:
        """One offer at a time; what changed while an offer was out goes into the next one."""
        loop = asyncio.get_running_loop()
        retries = 0  # offers replaced in a row for want of an answer
        while not self.closed:
            if not retries:
                await self._offer_wanted.wait()
            self._offer_wanted.clear()
            subscriber = self.subscriber
            if subscriber is None or subscriber.closed:  # closed: the server is shutting down
                retries = 0
                continue
            try:
                sdp, tags = await subscriber.create_offer()
            except Exception as exc:  # e.g. its peer connection closed meanwhile: wait for the next change
                log.warning("subscriber offer for %s failed: %s", self.participant.uid, exc)
                retries = 0
                continue
            self.negotiation += 1
            answer: asyncio.Future[str] = loop.create_future()
            self._pending_answer = (self.negotiation, answer)
            self.participant.send({"type": "offer", "sdp": sdp, "negotiation": self.negotiation,
                                   "feeds": tags})
            answer_sdp = await self._answer_or_timeout(answer)
            self._pending_answer = None
            if answer_sdp is None:
                retries += 1
                if retries > MAX_OFFER_RETRIES:
                    await self._close_subscriber_side()
                    return
                self._offer_timed_out()
                continue  # the next offer carries the current feeds; the stale one is refused
            retries = 0
            try:
                await subscriber.set_answer(answer_sdp)
            except Exception as exc:  # a bad answer must not end the FIFO
                log.warning("subscriber answer of %s rejected: %s", self.participant.uid, exc)

    async def _answer_or_timeout(self, answer: asyncio.Future[str]) -> str | None:
        """The answer, or None after ANSWER_TIMEOUT_S on one socket (close() cancels the wait).

        While the participant has no socket the offer sits in its resume buffer: the wait starts again
        (checked every tenth of the timeout) once a socket is back.
        """
        loop = asyncio.get_running_loop()
        timeout_s = ANSWER_TIMEOUT_S
        connection = self.participant.connection
        deadline = loop.time() + timeout_s
        while True:
            left = max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait((answer,), timeout=min(left, timeout_s / 10))
            if done:
                return answer.result()
            current = self.participant.connection
            if current is None or current is not connection:
                connection = current
                deadline = loop.time() + timeout_s
            elif loop.time() >= deadline:
                return None

    def _offer_timed_out(self) -> None:
        TOTALS.answer_timeouts += 1
        self.answer_timeouts += 1
        negotiation = self.negotiation
        if self.answer_timeouts == 1:
            log.warning("no answer from %s to subscriber offer %d within %g s: offering again",
                        self.participant.uid, negotiation, ANSWER_TIMEOUT_S)
        self.participant.send({"type": "error", "code": "conflict", "negotiation": negotiation,
                               "message": f"no answer to subscriber offer {negotiation} within "
                                          f"{ANSWER_TIMEOUT_S:g} s: it is replaced by the next offer"})

    async def _close_subscriber_side(self) -> None:
        """MAX_OFFER_RETRIES offers in a row went unanswered: stop forwarding to this participant."""
        TOTALS.answer_timeouts += 1
        TOTALS.subscribers_closed += 1
        self.answer_timeouts += 1
        self.subscriber_failed = True
        self.participant.auto_subscribe = False  # new feeds must not reach subscribe() and its Conflict
        log.warning("closing the subscriber transport of %s: %d offers unanswered",
                    self.participant.uid, MAX_OFFER_RETRIES + 1)
        self.participant.send({"type": "error", "code": "conflict", "negotiation": self.negotiation,
                               "message": f"{MAX_OFFER_RETRIES + 1} subscriber offers went unanswered: "
                                          "the subscriber transport is closed, join again to receive media"})
        for feed_id in list(self.forwarders_by_feed):
            self.participant.subscriptions.discard(feed_id)
        self.forwarders_by_feed.clear()
        subscriber, self.subscriber = self.subscriber, None
        if subscriber is not None:
            await subscriber.close()

    def on_answer(self, negotiation: int, sdp: str) -> None:
        pending = self._pending_answer
        if pending is None or pending[0] != negotiation:
            raise Conflict(f"no offer with negotiation {negotiation} is waiting for an answer")
        if "m=" not in sdp:
            raise BadRequest("sdp is not a session description")
        if not pending[1].done():
            pending[1].set_result(sdp)

    async def add_candidate(self, transport: str, candidate: str, mid: str | None, index: int | None) -> None:
        target = self.publisher if transport == "publisher" else self.subscriber
        if target is None:
            raise Conflict(f"no {transport} transport has been negotiated yet")
        try:
            await target.add_ice_candidate(candidate, mid, index)
        except (ValueError, IndexError) as exc:
            raise BadRequest(f"candidate was not accepted: {exc}") from None

    # -- end ---------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise Conflict("participant has left")

    async def close(self) -> None:
        """Idempotent: stops the FIFO, then closes both transports (their receivers and forwarders)."""
        if self.closed:
            return
        self.closed = True
        if self._negotiator is not None:
            self._negotiator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._negotiator
            self._negotiator = None
        for feed_id in list(self.forwarders_by_feed):
            self.participant.subscriptions.discard(feed_id)
        self.forwarders_by_feed.clear()
        transports: list[Any] = [t for t in (self.publisher, self.subscriber) if t is not None]
        self.publisher = self.subscriber = None
        for transport in transports:
            await transport.close()
        self.session_media.on_participant_media_closed(self)
