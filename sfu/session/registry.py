"""All live sessions of the process, keyed by (cid, sid): created on first join, dropped when they end."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sfu.auth.identity import Identity
from sfu.config import Config
from sfu.errors import Conflict, Unavailable
from sfu.session.admission import CpuMeter, admits_new_session, max_cpu_fraction
from sfu.session.participant import Connection
from sfu.session.resume import ResumeTokens
from sfu.session.session import JoinResult, Session, SessionClosed, Webhooks
from sfu.store.base import Store

log = logging.getLogger("sfu.session")


class Registry:
    def __init__(self, config: Config, store: Store, webhooks: Webhooks, media: Any) -> None:
        self.config = config
        self.store = store
        self.webhooks = webhooks
        self.media = media  # sfu.media.engine.MediaEngine, for the media glue
        self.resume_tokens = ResumeTokens()
        self.sessions_by_key: dict[tuple[str, str], Session] = {}
        self.on_session_created: list[Callable[[Session], None]] = []
        """Called with each new session, e.g. by the media glue to add a SessionObserver."""
        self.closed = False
        self.draining = False
        """Set by `drain()`: new joins are refused, live participants stay (and may resume)."""
        self.max_cpu = max_cpu_fraction(config.max_worker_cpu)
        """No new session while `cpu_meter` reads at or above this (a fraction of one core)."""
        self.cpu_meter = CpuMeter(time.monotonic(), time.process_time())
        """Sampled by the Server while `max_cpu` is set."""

    def drain(self) -> None:
        """Rolling restarts: refuse new joins from now on; sessions already here continue."""
        if not self.draining:
            self.draining = True
            log.info("draining: new joins are refused", extra={"sessions": len(self.sessions_by_key)})

    @property
    def participant_count(self) -> int:
        return sum(len(s.participants_by_uid) for s in self.sessions_by_key.values())

    def get(self, cid: str, sid: str) -> Session | None:
        return self.sessions_by_key.get((cid, sid))

    def list(self, cid: str) -> list[Session]:
        return [s for (owner, _), s in sorted(self.sessions_by_key.items()) if owner == cid]

    async def join(self, identity: Identity, connection: Connection, *, resume: str | None = None,
                   auto_subscribe: bool = True,
                   sdk: dict[str, Any] | None = None) -> tuple[Session, JoinResult]:
        """Joins the identity's session, creating it on first join."""
        while True:
            if self.closed:
                raise Conflict("server is shutting down")
            if self.draining:
                live = self.get(identity.cid, identity.sid)
                if live is None or live._resumable(identity, resume) is None:
                    raise Conflict("server is draining: join through another server")
            if self.get(identity.cid, identity.sid) is None:
                self._check_capacity()
            session = self._get_or_create(identity.cid, identity.sid)
            try:
                result = await session.join(identity, connection, resume=resume,
                                            auto_subscribe=auto_subscribe, sdk=sdk)
            except SessionClosed:
                continue
            return session, result

    def _check_capacity(self) -> None:
        """`max_worker_cpu` in a single process: a new session needs this process below the limit."""
        if not admits_new_session(self.cpu_meter.cpu, self.max_cpu):
            raise Unavailable("server at capacity, try again later")

    def _get_or_create(self, cid: str, sid: str) -> Session:
        session = self.sessions_by_key.get((cid, sid))
        if session is None:
            session = Session(self.config, self.store, self.webhooks, self, self.resume_tokens, cid, sid)
            self.sessions_by_key[(cid, sid)] = session
            for callback in self.on_session_created:
                callback(session)
            self.webhooks.emit(cid, "session_started", {"sid": sid})
            log.info("session started", extra={"cid": cid, "sid": sid})
        return session

    def on_session_closed(self, session: Session) -> None:
        if self.sessions_by_key.get((session.cid, session.sid)) is session:
            del self.sessions_by_key[(session.cid, session.sid)]
        log.info("session ended", extra={"cid": session.cid, "sid": session.sid})

    async def close(self) -> None:
        """Ends every session; idempotent."""
        self.closed = True
        for session in list(self.sessions_by_key.values()):
            await session.close()
