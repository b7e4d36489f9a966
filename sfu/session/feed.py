"""A published media track as the session knows it: what others are told in `feed_published`."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

FeedKind = Literal["audio", "video"]


@dataclass(frozen=True, slots=True)
class Layer:
    """One simulcast layer (`rid` q/h/f, lowest first) with what the publisher announced about it."""

    rid: str
    width: int | None = None
    height: int | None = None
    max_bitrate: int | None = None
    bitrate: int | None = None  # measured by the server when the layer list last changed

    def to_wire(self) -> dict[str, Any]:
        return {"rid": self.rid, "width": self.width, "height": self.height, "max_bitrate": self.max_bitrate,
                "bitrate": self.bitrate}


@dataclass(slots=True, eq=False)
class Feed:
    """Mutable by the session only (through `Session.update_feed`), so every change is broadcast."""

    feed_id: str
    uid: str
    kind: FeedKind
    source: str
    name: str = ""
    muted: bool = False
    codec: str = ""
    layers: tuple[Layer, ...] = field(default_factory=tuple)

    def to_wire(self) -> dict[str, Any]:
        return {
            "feed_id": self.feed_id,
            "uid": self.uid,
            "kind": self.kind,
            "source": self.source,
            "name": self.name,
            "muted": self.muted,
            "codec": self.codec,
            "layers": [layer.to_wire() for layer in self.layers],
        }


def new_feed_id() -> str:
    """`f_` + 12 random hex digits: unique in a session without coordination."""
    return "f_" + secrets.token_hex(6)
