"""Fan-out of session events to `Session.events()` streams.

Each stream gets every event from the moment `events()` is called; events that happen before the first
stream exists (between `connect` and the first `events()` call) are kept, up to `BACKLOG_EVENTS`, and go
to that first stream, so a program that sets up first and listens second misses nothing.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from client_sdk.errors import RequestTimeout
from client_sdk.events import Closed, Event

BACKLOG_EVENTS = 1000
STREAM_EVENTS = 10_000
"""Per stream; a stream nobody reads drops its oldest events (counted in `dropped`)."""

E = TypeVar("E")


class EventHub:
    def __init__(self) -> None:
        self._streams: list[EventStream] = []
        self._backlog: collections.deque[Event] | None = collections.deque(maxlen=BACKLOG_EVENTS)
        self.closed = False

    def emit(self, event: Event) -> None:
        if self.closed:
            return
        if isinstance(event, Closed):
            self.closed = True
        if self._backlog is not None:
            self._backlog.append(event)
        for stream in self._streams:
            stream._put(event)

    def open_stream(self) -> EventStream:
        stream = EventStream(self)
        if self._backlog is not None:
            for event in self._backlog:
                stream._put(event)
            self._backlog = None
        elif self.closed:
            stream._put(Closed("closed"))
        self._streams.append(stream)
        return stream

    def _remove(self, stream: EventStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)


class EventStream:
    """An async iterator of events that ends after `Closed`; also an async context manager."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._done = False
        self.dropped = 0

    def _put(self, event: Event) -> None:
        if self._queue.qsize() >= STREAM_EVENTS:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        event = await self._queue.get()
        if isinstance(event, Closed):
            self._done = True
            self.close()
        return event

    async def next(
        self, kind: type[E], where: Callable[[E], bool] | None = None, timeout_s: float = 10.0
    ) -> E:
        """The next event of type `kind` (matching `where`), skipping others; RequestTimeout if none comes."""
        try:
            async with asyncio.timeout(timeout_s):
                async for event in self:
                    if isinstance(event, kind) and (where is None or where(event)):
                        return event
        except TimeoutError:
            raise RequestTimeout(f"no {kind.__name__} event within {timeout_s} s") from None
        raise RequestTimeout(f"the session closed before a {kind.__name__} event")

    def close(self) -> None:
        """Stops receiving events (a stream left open keeps at most STREAM_EVENTS of them)."""
        self._hub._remove(self)

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
