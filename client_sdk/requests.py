"""The request methods of `Session`, apart from its lifecycle: media (publish, subscribe) and the rest.

They live in a base class so that session.py keeps to the socket, the state and reconnection; everything
here goes through `_request` and the two peers that `Session` owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

from aiortc import MediaStreamTrack

from client_sdk.errors import ConnectionClosed, Forbidden, RequestTimeout, SfuError, UnsupportedCodec
from client_sdk.feeds import LocalFeed, RawFeed, RemoteFeed
from client_sdk.ice import rtc_configuration
from client_sdk.peers import PublisherPeer, SubscriberPeer
from client_sdk.wire import DEFAULT_PIPELINE, Feed, IceServer, JsonObject, Message, Participant


class FilePublication:
    """What `publish_file` returns: the feeds of one file (video first); `.feed_id` is the first one's."""

    def __init__(self, feeds: tuple[LocalFeed, ...]) -> None:
        self.feeds = feeds

    @property
    def feed_id(self) -> str:
        return self.feeds[0].feed_id

    async def unpublish(self) -> None:
        for feed in self.feeds:
            await feed.unpublish()


class Requests:
    """Every protocol request but `join` and `leave`; each raises the typed error of an `error` reply."""

    me: Participant | None
    feeds_by_id: dict[str, Feed]
    ice_servers: tuple[IceServer, ...]
    local_feeds: list[LocalFeed]
    _credentials: JsonObject
    _gather_hosts: tuple[str, ...]
    _publisher: PublisherPeer | None
    _subscriber: SubscriberPeer | None
    _subscribed: dict[str, bool]
    _request_timeout_s: float

    async def _request(self, kind: str, **fields: Any) -> JsonObject:
        raise NotImplementedError

    async def publish(
        self, track: MediaStreamTrack, source: str | None = None, name: str | None = None
    ) -> LocalFeed:
        """Publishes any aiortc track (a renegotiation if something is published already)."""
        feeds = await self.publish_many([(track, source, name)])
        return feeds[0]

    async def publish_many(
        self, tracks: Sequence[tuple[MediaStreamTrack, str | None, str | None]]
    ) -> list[LocalFeed]:
        """Publishes several (track, source, name) in one offer/answer, e.g. a camera and a microphone."""
        feeds = []
        for track, source, name in tracks:
            chosen = source or ("microphone" if track.kind == "audio" else "camera")
            self._check_publish_grant(chosen)
            feeds.append(LocalFeed(self, track, chosen, name))
        if self._publisher is None:
            self._publisher = PublisherPeer(
                rtc_configuration(self.ice_servers), self._gather_hosts, self._request
            )
        await self._publisher.negotiate(feeds)
        self.local_feeds.extend(feeds)
        return feeds

    def _check_publish_grant(self, source: str) -> None:
        """Refuses locally what the server would refuse: a refused offer leaves the transport half-done."""
        grants = self.me.grants if self.me is not None else None
        if grants is None:
            return
        allowed = grants.publish if isinstance(grants.publish, bool) else source in grants.publish
        if not allowed:
            raise Forbidden(f"token does not grant publish of {source}")

    async def publish_file(self, path: str | Path, *, name: str | None = None) -> FilePublication:
        """Publishes a pre-encoded file (video and/or audio) as it is: no decoding, no re-encoding."""
        from client_sdk import encoded  # PyAV demuxing, loaded only by programs that publish files

        tracks: list[MediaStreamTrack] = [
            encoded.EncodedAudioTrack(clip) if clip.kind == "audio" else encoded.EncodedVideoTrack(clip)
            for clip in encoded.from_file(path)
        ]
        items = [(t, "microphone" if t.kind == "audio" else "camera", name) for t in tracks]
        return FilePublication(tuple(await self.publish_many(items)))

    async def unpublish(self, feed_id: str) -> None:
        await self._request("unpublish", feed_id=feed_id)
        for feed in self.local_feeds:
            if feed.feed_id == feed_id and self._publisher is not None:
                await self._publisher.stop_feed(feed)
        self.local_feeds = [f for f in self.local_feeds if f.feed_id != feed_id]

    async def mute(self, feed_id: str, muted: bool = True) -> None:
        await self._request("mute", feed_id=feed_id, muted=muted)
        for feed in self.local_feeds:
            if feed.feed_id == feed_id:
                feed.muted = muted

    @overload
    async def subscribe(
        self, feed_id: str, *, decode: Literal[True] = ..., timeout_s: float | None = ...
    ) -> RemoteFeed: ...
    @overload
    async def subscribe(
        self, feed_id: str, *, decode: Literal[False], timeout_s: float | None = ...
    ) -> RawFeed: ...
    async def subscribe(
        self, feed_id: str, *, decode: bool = True, timeout_s: float | None = None
    ) -> RemoteFeed:
        """Subscribes and returns once the track is negotiated; `decode=False` gives `RawFeed.packets()`."""
        try:
            remote = await self._subscribe(feed_id, decode, None, timeout_s)
        except SfuError:
            if self._subscriber is not None and feed_id not in self._subscribed:
                self._subscriber.forget(feed_id)
            raise
        self._subscribed[feed_id] = decode
        return remote

    async def _subscribe(
        self, feed_id: str, decode: bool, previous: RemoteFeed | None, timeout_s: float | None = None
    ) -> RemoteFeed:
        subscriber = self._subscriber
        if subscriber is None:
            raise ConnectionClosed("session is not joined")
        current = subscriber.remotes_by_feed.get(feed_id)
        if current is None or isinstance(current, RawFeed) == decode:
            info = self.feeds_by_id.get(feed_id)
            remote = previous or (RemoteFeed(self, feed_id, info) if decode else RawFeed(self, feed_id, info))
            subscriber.expect(remote)
        else:
            remote = current
        await self._request("subscribe", feed_ids=[feed_id])
        try:
            async with asyncio.timeout(timeout_s or self._request_timeout_s):
                await subscriber.wait_for(feed_id)
        except TimeoutError:
            raise RequestTimeout(f"no offer carried feed {feed_id}") from None
        except UnsupportedCodec:
            with contextlib.suppress(SfuError):
                await self._request("unsubscribe", feed_ids=[feed_id])
            raise
        return remote

    async def unsubscribe(self, feed_ids: str | Sequence[str]) -> None:
        ids = [feed_ids] if isinstance(feed_ids, str) else list(feed_ids)
        await self._request("unsubscribe", feed_ids=ids)
        for feed_id in ids:
            self._subscribed.pop(feed_id, None)
            remote = self._subscriber.forget(feed_id) if self._subscriber else None
            if remote is not None:
                remote._ended()

    async def set_quality(
        self,
        feed_id: str,
        *,
        max_width: int | None = None,
        max_height: int | None = None,
        layer: str | None = None,
        paused: bool | None = None,
    ) -> None:
        fields = {"max_width": max_width, "max_height": max_height, "layer": layer, "paused": paused}
        await self._request(
            "set_quality", feed_id=feed_id, **{k: v for k, v in fields.items() if v is not None}
        )

    async def send(
        self,
        data: Any,
        *,
        to: Sequence[str] | None = None,
        pipeline: str = DEFAULT_PIPELINE,
        persist: bool = False,
    ) -> int:
        """Sends a JSON data message; returns its `seq` in the pipeline."""
        fields: JsonObject = {"data": data, "pipeline": pipeline, "persist": persist}
        if to is not None:
            fields["to"] = list(to)
        reply = await self._request("send", **fields)
        seq = reply.get("seq")
        return seq if isinstance(seq, int) else -1

    async def history(
        self,
        pipeline: str = DEFAULT_PIPELINE,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> list[Message]:
        """A page of a pipeline's persisted messages (`after`: what was missed, e.g. after a reconnect)."""
        fields: JsonObject = {"pipeline": pipeline, "limit": limit}
        if before is not None:
            fields["before"] = before
        if after is not None:
            fields["after"] = after
        reply = await self._request("history", **fields)
        return [Message.from_wire(m) for m in reply.get("messages", []) if isinstance(m, dict)]

    async def update(self, name: str) -> None:
        await self._request("update", name=name)

    async def ping(self) -> float:
        """Round trip of a `ping`, in seconds."""
        start = time.monotonic()
        await self._request("ping")
        return time.monotonic() - start

    async def refresh(self, token: str) -> None:
        """Hands the server a fresh token before the current one expires; reconnects use it too."""
        await self._request("refresh", token=token)
        if "token" in self._credentials:
            self._credentials["token"] = token
