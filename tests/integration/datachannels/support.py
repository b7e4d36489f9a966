"""Helpers for data-channel tests: checksummed payloads, an inbox of DataReceived, the server's relay."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
from collections.abc import Callable

import client_sdk
from client_sdk.events import DataReceived, DataReset
from sfu.session.data_relay import DataRelay
from tests.support import Credentials, RunningServer, wait_until

_SEQ = struct.Struct("!I")


def checksummed(seq: int, size: int) -> bytes:
    """`size` bytes: a 4-byte seq, random bytes, then the SHA-256 of what precedes it."""
    body = _SEQ.pack(seq) + os.urandom(max(size - 36, 0))
    return body + hashlib.sha256(body).digest()


def verify(payload: bytes) -> int:
    """The seq of an intact checksummed payload; AssertionError if it was altered."""
    body, digest = payload[:-32], payload[-32:]
    assert hashlib.sha256(body).digest() == digest, "payload corrupted"
    seq: int = _SEQ.unpack_from(body)[0]
    return seq


class Inbox:
    """Collects a session's DataReceived (and data_reset) events until `close()`."""

    def __init__(self, session: client_sdk.Session) -> None:
        self.session = session
        self.data: list[DataReceived] = []
        self.resets: list[DataReset] = []
        self._stream = session.events()
        self._task = asyncio.create_task(self._run(), name=f"inbox-{session.uid}")

    async def _run(self) -> None:
        async for event in self._stream:
            if isinstance(event, DataReceived):
                self.data.append(event)
            elif isinstance(event, DataReset):
                self.resets.append(event)

    def payloads(self, *, reliable: bool | None = None, topic: str | None = None) -> list[bytes]:
        return [e.payload for e in self.data
                if (reliable is None or e.reliable == reliable) and (topic is None or e.topic == topic)]

    def has(self, count: int, *, reliable: bool | None = None) -> Callable[[], bool]:
        """A `wait_until` predicate: at least `count` messages (of that reliability) have arrived."""
        return lambda: len(self.payloads(reliable=reliable)) >= count

    async def close(self) -> None:
        self._stream.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def relay_of(server: RunningServer, creds: Credentials, sid: str = "room") -> DataRelay:
    session = server.server.registry.get(creds.cid, sid)
    assert session is not None and session.media is not None
    return session.media.data_relay


async def wait_channels_open(relay: DataRelay, uids: list[str], timeout_s: float = 10.0) -> None:
    """Until the server's `reliable` and `lossy` towards each uid are open (lossy drops before that)."""

    def ready() -> bool:
        for uid in uids:
            outbox = relay.outboxes_by_uid.get(uid)
            if outbox is None or outbox.lossy.readyState != "open" or outbox.reliable.readyState != "open":
                return False
        return True

    await wait_until(ready, timeout_s)
