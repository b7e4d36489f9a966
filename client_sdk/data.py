"""Binary data channels of the SDK (PROTOCOL.md "Binary data channels"), sending side.

The client opens `reliable` (ordered) and `lossy` (unordered, maxRetransmits 0) on its publisher
transport; receiving goes through the subscriber transport (`SubscriberPeer`, `DataReceived` events).
The channels are opened on the first `publish_data`: on the publisher peer that exists (a renegotiation)
or on a new, data-only one. A reconnect that replaces the publisher peer is noticed on the next send,
which opens the channels again on the new peer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from aiortc import RTCDataChannel, RTCPeerConnection

from client_sdk.errors import ConnectionClosed, RequestTimeout, TooLarge
from client_sdk.events import encode_data_message
from client_sdk.feeds import LocalFeed

MAX_PAYLOAD_BYTES = 15 * 1024
"""PROTOCOL.md: a payload is at most 15 KiB; the server drops (and counts) anything larger."""
RELIABLE_LABEL = "reliable"
LOSSY_LABEL = "lossy"
HIGH_WATER_BYTES = 1024 * 1024
"""`publish_data(reliable=True)` waits while aiortc buffers more than this: flow control, not loss."""
LOW_WATER_BYTES = 256 * 1024


class Negotiator(Protocol):
    """What DataChannels needs of the publisher peer (`client_sdk.peers.PublisherPeer`)."""

    @property
    def pc(self) -> RTCPeerConnection: ...

    async def negotiate(self, added: Sequence[LocalFeed]) -> None: ...


class DataChannels:
    """The client's two publisher-side channels; `send` opens them on first use."""

    def __init__(self, open_timeout_s: float = 10.0) -> None:
        self._open_timeout_s = open_timeout_s
        self._pc: RTCPeerConnection | None = None
        self._reliable: RTCDataChannel | None = None
        self._lossy: RTCDataChannel | None = None
        self._lock = asyncio.Lock()

    async def publish(
        self,
        publisher: Negotiator,
        payload: bytes,
        *,
        reliable: bool = True,
        to: Sequence[str] | None = None,
        topic: str | None = None,
    ) -> None:
        """Frames and sends one message; raises TooLarge over 15 KiB (the server would drop it)."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise TooLarge(f"data payload is {len(payload)} bytes, at most {MAX_PAYLOAD_BYTES}")
        wire = encode_data_message(payload, topic, list(to) if to is not None else None)
        await self.send_raw(publisher, wire, reliable=reliable)

    async def send_raw(self, publisher: Negotiator, wire: bytes, *, reliable: bool = True) -> None:
        """Sends already framed bytes as they are (tests use it to send what the server must drop)."""
        channel = await self._channel(publisher, reliable)
        if reliable and channel.bufferedAmount > HIGH_WATER_BYTES:
            await self._wait_low(channel)
        if channel.readyState != "open":
            raise ConnectionClosed(f"data channel {channel.label} is {channel.readyState}")
        channel.send(wire)

    async def _channel(self, publisher: Negotiator, reliable: bool) -> RTCDataChannel:
        async with self._lock:
            if (
                self._pc is not publisher.pc
                or self._reliable is None
                or self._lossy is None
                or self._reliable.readyState in ("closing", "closed")
            ):
                pc = publisher.pc
                self._reliable = pc.createDataChannel(RELIABLE_LABEL, ordered=True)
                self._lossy = pc.createDataChannel(LOSSY_LABEL, ordered=False, maxRetransmits=0)
                self._reliable.bufferedAmountLowThreshold = LOW_WATER_BYTES
                self._pc = pc
                try:
                    await publisher.negotiate([])
                except BaseException:
                    self._pc = None  # the next send opens them again
                    raise
            channels = (self._reliable, self._lossy)
            await self._wait_open(channels)
        return channels[0] if reliable else channels[1]

    async def _wait_open(self, channels: tuple[RTCDataChannel, RTCDataChannel]) -> None:
        if all(c.readyState == "open" for c in channels):
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._open_timeout_s):
                for channel in channels:
                    if channel.readyState == "open":
                        continue
                    opened: asyncio.Future[None] = loop.create_future()
                    channel.once("open", _resolver(opened))
                    await opened
        except TimeoutError:
            raise RequestTimeout("data channels did not open") from None

    @staticmethod
    async def _wait_low(channel: RTCDataChannel) -> None:
        low: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        channel.once("bufferedamountlow", _resolver(low))
        channel.once("close", _resolver(low))
        await low


def _resolver(future: asyncio.Future[None]) -> Callable[[], None]:
    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    return resolve
