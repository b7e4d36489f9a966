"""The media engine: one per server process; creates the per-participant transports and closes them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from sfu.media import bridge
from sfu.media.publisher import PublisherTransport
from sfu.media.subscriber import SubscriberTransport
from sfu.media.transport import Transport

log = logging.getLogger("sfu.media.engine")


class MediaEngine:
    """Owns every transport; `close()` closes them all and is idempotent.

    `ice_hosts` are exactly the host candidates offered (e.g. 127.0.0.1 in tests, the public address on
    a server). Empty means aioice's default: every interface except loopback.
    """

    def __init__(self, ice_hosts: Sequence[str], ice_network: bridge.IceNetwork | None = None) -> None:
        self.ice_hosts = tuple(ice_hosts)
        self.ice_network = ice_network  # port range and announced (1:1 NAT) addresses of host candidates
        self._transports: set[Transport] = set()
        self._closed = False
        bridge.install_ice_host_override()

    def create_publisher(self) -> PublisherTransport:
        """A transport the participant publishes on (it offers, we answer)."""
        self._check_open()
        transport = PublisherTransport(self.ice_hosts, on_closed=self._transport_closed)
        transport.ice_network = self.ice_network
        self._transports.add(transport)
        return transport

    def create_subscriber(self) -> SubscriberTransport:
        """A transport the participant receives on (we offer, it answers)."""
        self._check_open()
        transport = SubscriberTransport(self.ice_hosts, on_closed=self._transport_closed)
        transport.ice_network = self.ice_network
        self._transports.add(transport)
        return transport

    @property
    def transports(self) -> list[Transport]:
        return list(self._transports)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("media engine is closed")

    def _transport_closed(self, transport: Transport) -> None:
        self._transports.discard(transport)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        transports = list(self._transports)
        await asyncio.gather(*(t.close() for t in transports), return_exceptions=True)
        self._transports.clear()
