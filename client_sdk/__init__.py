"""Python SDK for the pysfu server: join a session, publish and subscribe feeds, exchange data.

```python
async with await client_sdk.connect("http://127.0.0.1:7880", token=token) as session:
    feed = await session.publish(track, source="camera")
    async for event in session.events():
        ...
```
It speaks PROTOCOL.md over aiohttp and aiortc and never imports the server package.
"""

from client_sdk import admin, tokens
from client_sdk.errors import (
    BadRequest,
    Conflict,
    ConnectionClosed,
    Forbidden,
    InternalError,
    NotFound,
    RateLimited,
    RequestTimeout,
    SfuError,
    TooLarge,
    TooManyRedirects,
    Unauthorized,
    Unavailable,
    UnsupportedCodec,
)
from client_sdk.events import (
    ActiveSpeakers,
    Closed,
    DataReceived,
    DataReset,
    Event,
    FeedPublished,
    FeedUnpublished,
    FeedUpdated,
    LayerChanged,
    LayersWanted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    Reconnected,
    Reconnecting,
    Recording,
    Speaker,
    UnknownEvent,
)
from client_sdk.feeds import LocalFeed, RawFeed, RemoteFeed
from client_sdk.hub import EventStream
from client_sdk.requests import FilePublication
from client_sdk.session import Session, connect
from client_sdk.wire import Feed, Grants, IceServer, Joined, Layer, Message, Participant, SessionInfo

__version__ = "0.1.0"

__all__ = [
    "ActiveSpeakers",
    "BadRequest",
    "Closed",
    "Conflict",
    "ConnectionClosed",
    "DataReceived",
    "DataReset",
    "Event",
    "EventStream",
    "Feed",
    "FeedPublished",
    "FeedUnpublished",
    "FeedUpdated",
    "FilePublication",
    "Forbidden",
    "Grants",
    "IceServer",
    "InternalError",
    "Joined",
    "Layer",
    "LayerChanged",
    "LayersWanted",
    "LocalFeed",
    "Message",
    "NotFound",
    "Participant",
    "ParticipantJoined",
    "ParticipantLeft",
    "ParticipantUpdated",
    "RateLimited",
    "RawFeed",
    "Reconnected",
    "Reconnecting",
    "Recording",
    "RemoteFeed",
    "RequestTimeout",
    "Session",
    "SessionInfo",
    "SfuError",
    "Speaker",
    "TooLarge",
    "TooManyRedirects",
    "Unauthorized",
    "Unavailable",
    "UnknownEvent",
    "UnsupportedCodec",
    "admin",
    "connect",
    "tokens",
]
