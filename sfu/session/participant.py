"""One connected device in a session: its identity, feeds, outbox and the timers that may end it."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from typing import Any, Protocol

from sfu.auth.identity import Grants, Identity, Policy
from sfu.session.feed import Feed
from sfu.session.tasks import call_later, cancel_and_wait

log = logging.getLogger("sfu.session")

MAX_BUFFERED = 1000
"""Events kept for a participant that is joining or has dropped and may resume; older ones are dropped."""
SNAPSHOT_EVENTS = frozenset({"participant_joined", "participant_left", "participant_updated",
                             "feed_published", "feed_unpublished", "feed_updated"})
"""Events whose effect a `joined` snapshot already shows."""


class Connection(Protocol):
    """The socket side of a participant, implemented by signaling/ws.py; both calls never block."""

    def send(self, message: dict[str, Any]) -> None: ...

    def close(self, code: int, reason: str) -> None:
        """Sends `closed {reason}` and then closes the socket with `code`."""
        ...


class Closable(Protocol):
    async def close(self) -> None: ...


class ParticipantListener(Protocol):
    """What a participant tells its session; implemented by Session."""

    async def on_participant_token_expired(self, participant: Participant) -> None: ...
    async def on_participant_resume_timeout(self, participant: Participant) -> None: ...


class Participant:
    """Owned by its Session; `close()` cancels its timers, closes attachments and its connection."""

    def __init__(self, identity: Identity, listener: ParticipantListener, *, resume_window_s: float,
                 auto_subscribe: bool = True, sdk: dict[str, Any] | None = None) -> None:
        self.uid = identity.uid
        self.identity = identity
        self.name: str = identity.name or ""
        self.description: dict[str, Any] = dict(identity.description)
        self.grants: Grants = identity.grants
        self.policy: Policy = identity.policy
        self.expires_at = identity.expires_at
        self.auto_subscribe = auto_subscribe
        self.sdk = sdk
        self.joined_at = time.time()
        self.incarnation = secrets.token_hex(8)  # binds resume tokens to this participant, not its uid
        self.feeds_by_id: dict[str, Feed] = {}
        self.subscriptions: set[str] = set()  # feed ids, kept across a resume; the media glue fills it
        self.attachments: list[Closable] = []  # e.g. the media glue's transports, closed with us
        self.connection: Connection | None = None
        self.dropped_events = 0
        self.closed = False
        self._listener = listener
        self._resume_window_s = resume_window_s
        self._buffer: deque[dict[str, Any]] | None = deque()
        self._expiry_task: asyncio.Task[None] | None = None
        self._resume_task: asyncio.Task[None] | None = None

    @property
    def hidden(self) -> bool:
        return self.grants.hidden

    @property
    def connected(self) -> bool:
        return self.connection is not None

    # -- outbox ------------------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """To the socket, or to the buffer while joining or disconnected (bounded, oldest dropped)."""
        if self.closed:
            return
        if self._buffer is not None:
            if len(self._buffer) >= MAX_BUFFERED:
                self._buffer.popleft()
                self.dropped_events += 1
            self._buffer.append(message)
        elif self.connection is not None:
            self.connection.send(message)

    def drop_stale_presence(self) -> None:
        """On resume the fresh `joined` snapshot replaces missed presence events; everything else stays."""
        if self._buffer is not None:
            self._buffer = deque(m for m in self._buffer if m.get("type") not in SNAPSHOT_EVENTS)

    def release(self, first: dict[str, Any], seen: set[tuple[str, int]]) -> None:
        """Sends `first` (the `joined` reply), then what was buffered except messages listed in `seen`."""
        if self.connection is None:
            return
        self.connection.send(first)
        buffered, self._buffer = self._buffer or deque(), None
        for message in buffered:
            if message.get("type") == "message" and (message.get("pipeline"), message.get("seq")) in seen:
                continue
            self.connection.send(message)

    # -- connection --------------------------------------------------------------------------------------

    async def attach(self, connection: Connection) -> None:
        """A (re)joined socket; events buffer until `release`. A still-open older socket is replaced."""
        await cancel_and_wait(self._resume_task)
        self._resume_task = None
        old, self.connection = self.connection, connection
        if old is not None and old is not connection:
            old.close(4010, "replaced")
        if self._buffer is None:
            self._buffer = deque()

    def detach(self, connection: Connection) -> None:
        """The socket dropped without a leave: buffer events and wait `resume_window_s` for a resume."""
        if self.closed or self.connection is not connection:
            return
        self.connection = None
        if self._buffer is None:
            self._buffer = deque()

        async def timeout() -> None:
            await self._listener.on_participant_resume_timeout(self)

        self._resume_task = call_later(self._resume_window_s, timeout, f"resume-window-{self.uid}")

    def watch_expiry(self, expires_at: float | None) -> None:
        """Ends the participant with 4013 when its token's `exp` passes without a `refresh`."""
        self.expires_at = expires_at
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            self._expiry_task = None
        if expires_at is None:
            return

        async def expire() -> None:
            await self._listener.on_participant_token_expired(self)

        self._expiry_task = call_later(expires_at - time.time(), expire, f"token-expiry-{self.uid}")

    def apply_identity(self, identity: Identity) -> None:
        """A refreshed token: new expiry, and its name/description/grants/policy if they changed."""
        self.identity = identity
        self.description = dict(identity.description)
        self.grants = identity.grants
        self.policy = identity.policy
        if identity.name is not None:
            self.name = identity.name

    # -- views -------------------------------------------------------------------------------------------

    def to_wire(self, *, with_grants: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uid": self.uid,
            "name": self.name,
            "description": self.description,
            "feeds": [feed.to_wire() for feed in self.feeds_by_id.values()],
        }
        if with_grants:
            out["grants"] = self.grants.to_wire()
        return out

    # -- end ---------------------------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "left") -> None:
        """Idempotent: cancels timers, closes attachments, then the socket with `closed {reason}`."""
        if self.closed:
            return
        self.closed = True
        self._buffer = None
        for task in (self._expiry_task, self._resume_task):
            await cancel_and_wait(task)
        self._expiry_task = self._resume_task = None
        attachments, self.attachments = self.attachments, []
        for attachment in attachments:
            try:
                await attachment.close()
            except Exception:
                log.exception("closing an attachment of %s failed", self.uid)
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close(code, reason)
