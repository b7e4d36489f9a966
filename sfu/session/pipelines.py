"""Data messages of a session: `send`, per-pipeline ordering, persistence and history.

Ordering: one lock per pipeline covers `next_seq`, the optional write and the fan-out, so every recipient
sees a pipeline's messages in `seq` order. Delivery goes into each participant's outbox, which never
blocks, so a slow recipient cannot hold a pipeline up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from sfu.auth.identity import Policy
from sfu.errors import Forbidden, NotFound
from sfu.session.participant import Participant
from sfu.store.base import Store, StoredMessage

JOIN_HISTORY = 50


class Pipelines:
    """All pipelines of one session name; the store keys history by (cid, session name, pipeline)."""

    def __init__(self, store: Store, cid: str, sid: str,
                 participants_by_uid: Mapping[str, Participant]) -> None:
        self.store = store
        self.cid = cid
        self.sid = sid
        self._participants_by_uid = participants_by_uid
        self._locks_by_pipeline: dict[str, asyncio.Lock] = {}

    async def send(self, from_uid: str, policy: Policy | None, data: Any, *, to: tuple[str, ...] | None,
                   pipeline: str, persist: bool) -> int:
        """Delivers and optionally persists one message; returns its seq. `policy` None: no restriction."""
        if to is not None:
            self._check_recipients(to, policy)
        lock = self._locks_by_pipeline.setdefault(pipeline, asyncio.Lock())
        async with lock:
            seq = await self.store.next_seq(self.cid, self.sid, pipeline)
            message = StoredMessage(seq, from_uid, pipeline, int(time.time() * 1000), data, to)
            if persist:
                await self.store.append_message(self.cid, self.sid, message)
            wire = message.to_wire()
            for participant in self._recipients(from_uid, policy, to):
                participant.send(wire)
            return seq

    def _check_recipients(self, to: tuple[str, ...], policy: Policy | None) -> None:
        for uid in to:
            if policy is not None and not policy.allows_message(uid):
                raise Forbidden(f"policy does not allow messaging {uid}")
            if uid not in self._participants_by_uid:
                raise NotFound(f"participant {uid} is not in the session")

    def _recipients(self, from_uid: str, policy: Policy | None,
                    to: tuple[str, ...] | None) -> list[Participant]:
        if to is None:
            candidates = list(self._participants_by_uid.values())
        else:
            candidates = [p for uid in to if (p := self._participants_by_uid.get(uid)) is not None]
        return [
            p for p in candidates
            if p.uid != from_uid and (policy is None or policy.allows_message(p.uid))
        ]

    async def history_for(self, uid: str) -> dict[str, list[dict[str, Any]]]:
        """The last messages of every pipeline that `uid` may see: `joined.history`."""
        out: dict[str, list[dict[str, Any]]] = {}
        for pipeline in await self.store.list_pipelines(self.cid, self.sid):
            messages = await self.store.list_messages(self.cid, self.sid, pipeline, for_uid=uid,
                                                      limit=JOIN_HISTORY)
            if messages:
                out[pipeline] = [m.to_wire() for m in messages]
        return out

    async def page(self, uid: str, pipeline: str, *, before: int | None, after: int | None,
                   limit: int) -> list[dict[str, Any]]:
        """One page of a pipeline's history as `uid` sees it, ascending by seq."""
        messages = await self.store.list_messages(self.cid, self.sid, pipeline, for_uid=uid, before=before,
                                                  after=after, limit=limit)
        return [m.to_wire() for m in messages]
