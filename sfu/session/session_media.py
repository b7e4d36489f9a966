"""The media side of one session: the receiver of every feed, each participant's transports, and
auto-subscribe (PROTOCOL.md: subscribes to every feed the policy allows, now and as they appear)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from sfu.media.engine import MediaEngine
from sfu.media.speakers import Speaker
from sfu.session.data_relay import DataRelay
from sfu.session.participant_media import ParticipantMedia
from sfu.session.speaker_watch import SpeakerWatch

if TYPE_CHECKING:
    from sfu.media.receiver import Receiver
    from sfu.session.feed import Feed
    from sfu.session.participant import Participant
    from sfu.session.session import Session

log = logging.getLogger("sfu.session.media")


class MediaObserver(Protocol):
    """Told about feeds that get packets and about the end of the session's media (e.g. recordings)."""

    def on_media_feed_receiver(self, feed: Feed, receiver: Receiver) -> None: ...
    def on_media_closed(self) -> None: ...


class SessionMedia:
    """A SessionObserver created with its session; its ParticipantMedia close with their participants."""

    def __init__(self, session: Session, engine: MediaEngine) -> None:
        self.session = session
        self.engine = engine
        self.receivers_by_feed: dict[str, Receiver] = {}
        self.media_by_uid: dict[str, ParticipantMedia] = {}
        self.speakers = SpeakerWatch(self._on_speakers_changed)
        self.speaker_uids: frozenset[str] = frozenset()  # the active speakers now (allocator priority)
        self.media_observers: list[MediaObserver] = []
        self.data_relay = DataRelay(self)  # binary data channels; `data_relay.counters` for metrics
        session.observers.append(self)
        session.media = self

    def media_for(self, participant: Participant) -> ParticipantMedia:
        """The participant's media, created on first use and closed with the participant."""
        media = self.media_by_uid.get(participant.uid)
        if media is None or media.participant is not participant:
            media = ParticipantMedia(self, participant)
            self.media_by_uid[participant.uid] = media
            participant.attachments.append(media)
        return media

    def on_feed_receiver(self, feed_id: str, receiver: Receiver) -> None:
        """A feed now has packets to forward: auto-subscribers get it in their next offer."""
        self.receivers_by_feed[feed_id] = receiver
        feed = self.session.feeds_by_id.get(feed_id)
        if feed is None:
            return
        for observer in list(self.media_observers):
            observer.on_media_feed_receiver(feed, receiver)
        owner = self.session.participants_by_uid.get(feed.uid)
        if feed.kind == "audio" and owner is not None and not owner.hidden:
            self.speakers.add(feed_id, feed.uid, receiver)
        for participant in list(self.session.participants_by_uid.values()):
            if participant.uid != feed.uid and self._auto_subscribes(participant, feed):
                self.media_for(participant).subscribe([feed_id])

    def set_feed_muted(self, feed_id: str, muted: bool) -> None:
        """Mute stops forwarding at the receiver; forwarders resume on a key frame with no ts jump."""
        self.session.update_feed(feed_id, muted=muted)
        receiver = self.receivers_by_feed.get(feed_id)
        if receiver is not None:
            receiver.set_muted(muted)

    # -- SessionObserver ---------------------------------------------------------------------------------

    def on_participant_added(self, session: Session, participant: Participant) -> None:
        """Auto-subscribe a newcomer to every feed it may receive (one offer for all of them)."""
        self.data_relay.on_participant_added(participant)
        wanted = [
            feed.feed_id
            for feed in session.feeds_by_id.values()
            if feed.uid != participant.uid
            and feed.feed_id in self.receivers_by_feed
            and self._auto_subscribes(participant, feed)
        ]
        if wanted:
            self.media_for(participant).subscribe(wanted)

    def on_feed_removed(self, session: Session, feed: Feed) -> None:
        self.receivers_by_feed.pop(feed.feed_id, None)
        self.speakers.remove(feed.feed_id)
        for media in list(self.media_by_uid.values()):
            if feed.feed_id in media.forwarders_by_feed:
                media.unsubscribe([feed.feed_id])
            if media.participant.uid == feed.uid:
                media.feed_removed(feed.feed_id)

    def on_participant_removed(self, session: Session, participant: Participant) -> None:
        """Its transports close with it (an attachment); its feeds were removed just before."""
        self.data_relay.on_participant_removed(participant)

    def on_participant_media_closed(self, media: ParticipantMedia) -> None:
        if self.media_by_uid.get(media.participant.uid) is media:
            del self.media_by_uid[media.participant.uid]

    def _on_speakers_changed(self, speakers: tuple[Speaker, ...]) -> None:
        message = {"type": "active_speakers",
                   "speakers": [{"uid": s.uid, "level": round(s.level, 3)} for s in speakers]}
        for participant in self.session.participants_by_uid.values():
            participant.send(message)
        self.speaker_uids = frozenset(s.uid for s in speakers)
        feeds = self.session.feeds_by_id
        for media in self.media_by_uid.values():  # the allocators serve speakers' video before others'
            for feed_id, forwarder in media.forwarders_by_feed.items():
                feed = feeds.get(feed_id)
                forwarder.speaking = feed is not None and feed.uid in self.speaker_uids

    async def close(self) -> None:
        """The session ended: stop sampling speakers (participants close their own transports)."""
        await self.speakers.close()
        self.data_relay.close()
        self.receivers_by_feed.clear()
        for observer in list(self.media_observers):
            observer.on_media_closed()

    @staticmethod
    def _auto_subscribes(participant: Participant, feed: Feed) -> bool:
        return (
            participant.auto_subscribe
            and participant.grants.subscribe
            and participant.policy.allows_subscribe(feed.uid)
        )
