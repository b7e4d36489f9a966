"""A meeting room: its participants, their feeds, presence events, webhooks and the linger timer.

Every state change goes through a method here so that the matching event reaches exactly the participants
allowed to see it: presence to everyone except about hidden participants, feed events to those whose
`policy.subscribe` allows the publisher, messages through `Pipelines`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sfu.auth.ice import ice_servers_for
from sfu.auth.identity import Grants, Identity
from sfu.config import Config
from sfu.errors import Conflict, Forbidden, NotFound
from sfu.session.feed import Feed, FeedKind, Layer, new_feed_id
from sfu.session.participant import Connection, Participant
from sfu.session.pipelines import Pipelines
from sfu.session.resume import ResumeTokens
from sfu.session.tasks import call_later, cancel_and_wait
from sfu.store.base import Store

if TYPE_CHECKING:
    from sfu.session.session_media import SessionMedia

log = logging.getLogger("sfu.session")


class Webhooks(Protocol):
    def emit(self, cid: str, event: str, payload: dict[str, Any]) -> None: ...


class SessionListener(Protocol):
    """What a session tells the registry; implemented by Registry."""

    def on_session_closed(self, session: Session) -> None: ...


class SessionObserver(Protocol):
    """Hooks for the media glue: called after the session state changed, before events go out."""

    def on_participant_added(self, session: Session, participant: Participant) -> None: ...

    def on_feed_removed(self, session: Session, feed: Feed) -> None: ...
    def on_participant_removed(self, session: Session, participant: Participant) -> None: ...


class SessionClosed(Conflict):
    """A join raced with the session's end; the registry retries on a fresh session."""


@dataclass(frozen=True, slots=True)
class JoinResult:
    participant: Participant
    body: dict[str, Any]  # everything of `joined` except type and re
    seen: set[tuple[str, int]]  # (pipeline, seq) of the history in `body`
    resumed: bool


class Session:
    def __init__(self, config: Config, store: Store, webhooks: Webhooks, listener: SessionListener,
                 resume_tokens: ResumeTokens, cid: str, sid: str) -> None:
        self.cid = cid
        self.sid = sid
        self.config = config
        self.created_at = time.time()
        self.recording = False
        self.participants_by_uid: dict[str, Participant] = {}
        self.feeds_by_id: dict[str, Feed] = {}
        self.pipelines = Pipelines(store, cid, sid, self.participants_by_uid)
        self.observers: list[SessionObserver] = []
        self.media: SessionMedia | None = None  # set by SessionMedia when the server has a media engine
        self.closed = False
        self._webhooks = webhooks
        self._listener = listener
        self._resume_tokens = resume_tokens
        self._join_lock = asyncio.Lock()
        self._linger_task: asyncio.Task[None] | None = None

    # -- join and leave ----------------------------------------------------------------------------------

    async def join(self, identity: Identity, connection: Connection, *, resume: str | None = None,
                   auto_subscribe: bool = True, sdk: dict[str, Any] | None = None) -> JoinResult:
        """Adds (or, with a valid resume token, restores) a participant; `release` the result to send it."""
        async with self._join_lock:
            if self.closed:
                raise SessionClosed("session has already ended")
            participant = self._resumable(identity, resume)
            resumed = participant is not None
            if participant is not None:
                await participant.attach(connection)
                participant.drop_stale_presence()
                participant.apply_identity(identity)
            else:
                participant = await self._admit(identity, connection, auto_subscribe, sdk)
            participant.watch_expiry(identity.expires_at)
            body = self._joined_body(participant, resumed)
        try:
            body["history"] = await self.pipelines.history_for(participant.uid)
        except Exception:
            await self.remove_participant(participant, "left", 1011)
            raise
        seen = {(pipeline, m["seq"]) for pipeline, ms in body["history"].items() for m in ms}
        return JoinResult(participant, body, seen, resumed)

    def _resumable(self, identity: Identity, resume: str | None) -> Participant | None:
        existing = self.participants_by_uid.get(identity.uid)
        if resume is None or existing is None:
            return None
        incarnation = self._resume_tokens.incarnation(resume, self.cid, self.sid, identity.uid)
        return existing if incarnation == existing.incarnation else None

    async def _admit(self, identity: Identity, connection: Connection, auto_subscribe: bool,
                     sdk: dict[str, Any] | None) -> Participant:
        self._check_capacity(identity)
        existing = self.participants_by_uid.get(identity.uid)
        if existing is not None:
            await self.remove_participant(existing, "replaced", 4010)
        if identity.max_participants is not None:
            key_id = identity.key_id
            same_key = sum(1 for p in self.participants_by_uid.values() if p.identity.key_id == key_id)
            if same_key >= identity.max_participants:
                raise Forbidden("session is full")
        participant = Participant(identity, self, resume_window_s=self.config.resume_window_s,
                                  auto_subscribe=auto_subscribe, sdk=sdk)
        await participant.attach(connection)
        self.participants_by_uid[participant.uid] = participant
        await cancel_and_wait(self._linger_task)
        self._linger_task = None
        if not participant.hidden:
            self._broadcast({"type": "participant_joined", "participant": participant.to_wire()},
                            exclude=participant)
        self._emit("participant_joined", {"uid": participant.uid, "name": participant.name})
        for observer in self.observers:
            observer.on_participant_added(self, participant)
        return participant

    def _check_capacity(self, identity: Identity) -> None:
        """`max_participants`: a hidden joiner always fits; one replacing its own uid takes that place."""
        limit = self.config.max_participants
        if limit is None or identity.grants.hidden:
            return
        others = sum(1 for p in self.participants_by_uid.values() if not p.hidden and p.uid != identity.uid)
        if others >= limit:
            raise Forbidden(f"session is full: {limit} participants")

    def _joined_body(self, participant: Participant, resumed: bool) -> dict[str, Any]:
        body = {
            "session": {"sid": self.sid, "cid": self.cid, "recording": self.recording},
            "participant": participant.to_wire(with_grants=True),
            "participants": [p.to_wire() for p in self.visible_participants() if p is not participant],
            "ice_servers": ice_servers_for(self.config, participant.uid, time.time()),
            "resume": self._resume_tokens.issue(self.cid, self.sid, participant.uid, participant.incarnation),
            "resumed": resumed,
        }
        if participant.grants.force_relay:  # an addition to PROTOCOL.md: TURN only
            body["ice_transport_policy"] = "relay"
        return body

    async def remove_participant(self, participant: Participant, reason: str, code: int = 1000) -> None:
        """Ends one participant: its feeds go, its socket closes with `code`, others see it leave."""
        if self.participants_by_uid.get(participant.uid) is not participant:
            await participant.close(code, reason)
            return
        del self.participants_by_uid[participant.uid]
        for feed_id in list(participant.feeds_by_id):
            self.remove_feed(feed_id)
        for observer in self.observers:
            observer.on_participant_removed(self, participant)
        # NOTE: others hear of the leave before the leaver's transports finish closing (that can take
        # a while), so their tiles go at once.
        if not participant.hidden:
            self._broadcast({"type": "participant_left", "uid": participant.uid, "reason": reason})
        self._emit("participant_left", {"uid": participant.uid, "reason": reason})
        await participant.close(code, reason)
        if not self.participants_by_uid and not self.closed and self._linger_task is None:
            self._linger_task = call_later(self.config.session_linger_s, self._on_linger_expired,
                                           f"session-linger-{self.sid}")

    def disconnect(self, participant: Participant, connection: Connection) -> None:
        """The socket dropped without `leave`: the participant waits for a resume (others see nothing)."""
        participant.detach(connection)

    async def on_participant_token_expired(self, participant: Participant) -> None:
        await self.remove_participant(participant, "token_expired", 4013)

    async def on_participant_resume_timeout(self, participant: Participant) -> None:
        await self.remove_participant(participant, "timeout")

    async def _on_linger_expired(self) -> None:
        self._linger_task = None
        if not self.participants_by_uid:
            await self.end("linger")

    # -- participants ------------------------------------------------------------------------------------

    def visible_participants(self) -> list[Participant]:
        return [p for p in self.participants_by_uid.values() if not p.hidden]

    def participant(self, uid: str) -> Participant:
        participant = self.participants_by_uid.get(uid)
        if participant is None:
            raise NotFound(f"participant {uid} is not in the session")
        return participant

    def update_participant(self, participant: Participant, *, name: str | None = None,
                           description: dict[str, Any] | None = None, grants: Grants | None = None) -> None:
        """Applies changes live and tells the participant and the others (`participant_updated`)."""
        was_hidden = participant.hidden
        if name is not None:
            participant.name = name
        if description is not None:
            participant.description = description
        if grants is not None:
            participant.grants = grants
            for feed in list(participant.feeds_by_id.values()):
                if not grants.can_publish(feed.source):
                    self.remove_feed(feed.feed_id)
        self._announce_update(participant, was_hidden)

    def _announce_update(self, participant: Participant, was_hidden: bool) -> None:
        own_view = participant.to_wire(with_grants=True)
        participant.send({"type": "participant_updated", "participant": own_view})
        if was_hidden and not participant.hidden:
            event: dict[str, Any] = {"type": "participant_joined", "participant": participant.to_wire()}
        elif not was_hidden and participant.hidden:
            event = {"type": "participant_left", "uid": participant.uid, "reason": "hidden"}
        elif participant.hidden:
            return
        else:
            event = {"type": "participant_updated", "participant": participant.to_wire()}
        self._broadcast(event, exclude=participant)

    # -- feeds -------------------------------------------------------------------------------------------

    def add_feed(self, uid: str, *, kind: FeedKind, source: str, name: str = "", codec: str = "",
                 layers: Iterable[Layer] = (), muted: bool = False, feed_id: str | None = None) -> Feed:
        """A newly published track; checks `grants.publish` and announces `feed_published`."""
        participant = self.participant(uid)
        if not participant.grants.can_publish(source):
            raise Forbidden(f"token does not grant publish of {source}")
        feed_id = feed_id or new_feed_id()
        if feed_id in self.feeds_by_id:
            raise Conflict(f"feed {feed_id} already exists")
        feed = Feed(feed_id, uid, kind, source, name, muted, codec, tuple(layers))
        participant.feeds_by_id[feed_id] = feed
        self.feeds_by_id[feed_id] = feed
        self._broadcast_feed(feed, {"type": "feed_published", "feed": feed.to_wire()})
        self._emit("feed_published", {"uid": uid, "feed": feed.to_wire()})
        return feed

    def remove_feed(self, feed_id: str) -> Feed | None:
        """Stops announcing a feed (`feed_unpublished`); None when it was already gone."""
        feed = self.feeds_by_id.pop(feed_id, None)
        if feed is None:
            return None
        owner = self.participants_by_uid.get(feed.uid)
        if owner is not None:
            owner.feeds_by_id.pop(feed_id, None)
        for observer in self.observers:
            observer.on_feed_removed(self, feed)
        self._broadcast_feed(feed, {"type": "feed_unpublished", "feed_id": feed_id})
        self._emit("feed_unpublished", {"uid": feed.uid, "feed_id": feed_id})
        return feed

    def update_feed(self, feed_id: str, *, muted: bool | None = None, name: str | None = None,
                    codec: str | None = None, layers: Iterable[Layer] | None = None) -> Feed:
        """Changes a feed and announces `feed_updated`, to its owner too."""
        feed = self.feeds_by_id.get(feed_id)
        if feed is None:
            raise NotFound(f"feed {feed_id} is not in the session")
        if muted is not None:
            feed.muted = muted
        if name is not None:
            feed.name = name
        if codec is not None:
            feed.codec = codec
        if layers is not None:
            feed.layers = tuple(layers)
        message = {"type": "feed_updated", "feed": feed.to_wire()}
        self._broadcast_feed(feed, message)
        owner = self.participants_by_uid.get(feed.uid)
        if owner is not None:
            owner.send(message)
        return feed

    def _broadcast_feed(self, feed: Feed, message: dict[str, Any]) -> None:
        owner = self.participants_by_uid.get(feed.uid)
        if owner is not None and owner.hidden:
            return
        for participant in self.participants_by_uid.values():
            if participant.uid != feed.uid and participant.policy.allows_subscribe(feed.uid):
                participant.send(message)

    # -- whole session -----------------------------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """The REST view: the session with its visible participants and their feeds."""
        return {
            "sid": self.sid,
            "cid": self.cid,
            "recording": self.recording,
            "created_at": self.created_at,
            "participants": [p.to_wire(with_grants=True) for p in self.visible_participants()],
        }

    def _broadcast(self, message: dict[str, Any], exclude: Participant | None = None) -> None:
        for participant in self.participants_by_uid.values():
            if participant is not exclude:
                participant.send(message)

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        self._webhooks.emit(self.cid, event, {"sid": self.sid, **payload})

    async def end(self, reason: str = "session_ended", code: int = 4012) -> None:
        """Closes every participant with `closed {reason}` and `code`; idempotent."""
        if self.closed:
            return
        self.closed = True
        await cancel_and_wait(self._linger_task)
        self._linger_task = None
        participants = list(self.participants_by_uid.values())
        self.participants_by_uid.clear()
        self.feeds_by_id.clear()
        for participant in participants:
            for observer in self.observers:
                observer.on_participant_removed(self, participant)
            await participant.close(code, reason)
        if self.media is not None:
            await self.media.close()
        self._emit("session_ended", {"reason": reason})
        self._listener.on_session_closed(self)

    async def close(self) -> None:
        """Server shutdown: sockets close with 1001 `server_shutdown`."""
        await self.end("server_shutdown", 1001)
