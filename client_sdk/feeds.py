"""Handles returned by `publish` and `subscribe`: small objects that remember what the SDK must restore."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiortc import MediaStreamTrack, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from client_sdk.rawtap import MediaSection, RawSink
from client_sdk.wire import Feed

if TYPE_CHECKING:
    from client_sdk.requests import Requests


class SenderTrack(MediaStreamTrack):
    """What aiortc's sender gets instead of the user's track.

    aiortc's `RTCRtpSender` stops its track when its loop ends, which includes the transport going away
    (the server dropped us after the resume window). Giving it this proxy keeps the user's track alive, so
    a fresh rejoin can publish the same track again; the SDK never stops a track it was given.
    """

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        return await self._source.recv()


class LocalFeed:
    """A track this session publishes; `feed_id` may change if a reconnect had to publish it afresh."""

    def __init__(self, session: Requests, track: MediaStreamTrack, source: str, name: str | None) -> None:
        self._session = session
        self.track = track
        self.source = source
        self.name = name
        self.kind: str = track.kind
        self.feed_id = ""
        self.mid: str | None = None
        self.muted = False
        self.active = True
        self.transceiver: RTCRtpTransceiver | None = None

    def new_sender_track(self) -> SenderTrack:
        return SenderTrack(self.track)

    def __repr__(self) -> str:
        return f"LocalFeed(feed_id={self.feed_id!r}, kind={self.kind!r}, source={self.source!r})"

    async def mute(self, muted: bool = True) -> None:
        await self._session.mute(self.feed_id, muted)

    async def unpublish(self) -> None:
        await self._session.unpublish(self.feed_id)


class RemoteFeed:
    """A subscribed feed; `track` yields decoded frames (aiortc `VideoFrame`/`AudioFrame`)."""

    def __init__(self, session: Requests, feed_id: str, info: Feed | None) -> None:
        self._session = session
        self.feed_id = feed_id
        self.info = info
        self._track: MediaStreamTrack | None = None
        self.active = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(feed_id={self.feed_id!r})"

    @property
    def track(self) -> MediaStreamTrack:
        """The current remote track (replaced by a new one if a reconnect had to subscribe afresh)."""
        if self._track is None:
            raise RuntimeError("the feed has no track yet")
        return self._track

    @property
    def kind(self) -> str:
        return self.track.kind

    async def set_quality(
        self,
        *,
        max_width: int | None = None,
        max_height: int | None = None,
        layer: str | None = None,
        paused: bool | None = None,
    ) -> None:
        await self._session.set_quality(
            self.feed_id, max_width=max_width, max_height=max_height, layer=layer, paused=paused
        )

    async def unsubscribe(self) -> None:
        await self._session.unsubscribe(self.feed_id)

    def _ended(self) -> None:
        self.active = False


class RawFeed(RemoteFeed):
    """A subscribed feed read as RTP packets (`decode=False`): for recorders and relays."""

    def __init__(self, session: Requests, feed_id: str, info: Feed | None) -> None:
        super().__init__(session, feed_id, info)
        self.sink = RawSink()
        self.section: MediaSection | None = None
        self._request_key_frame: Callable[[], Awaitable[None]] | None = None

    def packets(self) -> AsyncIterator[RtpPacket]:
        """RTP packets (aiortc `RtpPacket`, header extensions parsed) as received; ends on unsubscribe."""
        return self.sink.packets()

    @property
    def codec(self) -> str | None:
        """The mime type of the first codec offered for this feed (`video/VP8`, `audio/opus`...)."""
        if self.section is None or not self.section.codecs_by_pt:
            return None
        return next(iter(self.section.codecs_by_pt.values()))

    async def request_key_frame(self) -> None:
        """Sends a PLI for this feed: a recorder that starts late needs a key frame to begin a file."""
        if self._request_key_frame is not None:
            await self._request_key_frame()

    def _ended(self) -> None:
        super()._ended()
        self.sink.close()
