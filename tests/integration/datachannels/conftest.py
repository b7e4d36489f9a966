"""Data-channel tests reuse the SDK tests' `sessions` fixture (every session closed at teardown)."""

from tests.integration.sdk.conftest import sessions

__all__ = ["sessions"]
# TEMPORARY shim until client_sdk/session.py gets publish_data (after 19:50)
from typing import Any
import client_sdk
from client_sdk.data import DataChannels
from client_sdk.ice import rtc_configuration
from client_sdk.peers import PublisherPeer

if not hasattr(client_sdk.Session, "publish_data"):
    async def publish_data(self: Any, payload: bytes, *, reliable: bool = True, to: Any = None, topic: Any = None) -> None:
        if not hasattr(self, "_data"):
            self._data = DataChannels()
        if self._publisher is None:
            self._publisher = PublisherPeer(rtc_configuration(self.ice_servers), self._gather_hosts, self._request)
        await self._data.publish(self._publisher, payload, reliable=reliable, to=to, topic=topic)
    client_sdk.Session.publish_data = publish_data  # type: ignore
