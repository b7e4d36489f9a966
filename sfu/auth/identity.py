"""What a verified credential says about its holder: who, where, and what they may do."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sfu.errors import BadRequest

SOURCES = ("camera", "microphone", "screen", "screen_audio", "custom")
GRANT_NAMES = ("publish", "subscribe", "data", "record", "admin", "hidden", "force_relay")
IDENTIFIER_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")


def is_identifier(value: object) -> bool:
    """`sid` and `uid` rule of PROTOCOL.md: 1-128 characters of `[A-Za-z0-9_.:@-]`."""
    return isinstance(value, str) and IDENTIFIER_RE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Grants:
    """PROTOCOL.md grants with their defaults; `publish` is a bool or the tuple of allowed sources."""

    publish: bool | tuple[str, ...] = True
    subscribe: bool = True
    data: bool = True
    record: bool = False
    admin: bool = False
    hidden: bool = False
    force_relay: bool = False

    def can_publish(self, source: str) -> bool:
        if isinstance(self.publish, bool):
            return self.publish
        return source in self.publish

    @property
    def publishes_anything(self) -> bool:
        return bool(self.publish)

    def to_wire(self) -> dict[str, Any]:
        publish: bool | list[str] = self.publish if isinstance(self.publish, bool) else list(self.publish)
        return {
            "publish": publish,
            "subscribe": self.subscribe,
            "data": self.data,
            "record": self.record,
            "admin": self.admin,
            "hidden": self.hidden,
            "force_relay": self.force_relay,
        }

    @classmethod
    def from_wire(cls, raw: object, base: Grants | None = None) -> Grants:
        """Parse a grants object; absent names keep `base` (defaults); unknown names are an error."""
        start = base if base is not None else cls()
        if raw is None:
            return start
        if not isinstance(raw, dict):
            raise BadRequest("grants must be an object")
        unknown = sorted(set(raw) - set(GRANT_NAMES))
        if unknown:
            raise BadRequest(f"unknown grant {unknown[0]!r}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name == "publish" and isinstance(value, list):
                bad = [s for s in value if s not in SOURCES]
                if bad or not all(isinstance(s, str) for s in value):
                    raise BadRequest(f"grants.publish has an unknown source {bad[0] if bad else value!r}")
                values[name] = tuple(value)
            elif isinstance(value, bool):
                values[name] = value
            else:
                raise BadRequest(f"grants.{name} must be a boolean")
        return replace(start, **values)


@dataclass(frozen=True, slots=True)
class Policy:
    """Shell-style uid globs limiting whom one may subscribe to or message; `None` means everyone."""

    subscribe: tuple[str, ...] | None = None
    message: tuple[str, ...] | None = None

    def allows_subscribe(self, uid: str) -> bool:
        return self.subscribe is None or any(fnmatch.fnmatchcase(uid, p) for p in self.subscribe)

    def allows_message(self, uid: str) -> bool:
        return self.message is None or any(fnmatch.fnmatchcase(uid, p) for p in self.message)

    def to_wire(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if self.subscribe is not None:
            out["subscribe"] = list(self.subscribe)
        if self.message is not None:
            out["message"] = list(self.message)
        return out

    @classmethod
    def from_wire(cls, raw: object) -> Policy:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise BadRequest("policy must be an object")
        unknown = sorted(set(raw) - {"subscribe", "message"})
        if unknown:
            raise BadRequest(f"unknown policy {unknown[0]!r}")
        parsed: dict[str, tuple[str, ...]] = {}
        for name, value in raw.items():
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise BadRequest(f"policy.{name} must be a list of uid patterns")
            parsed[name] = tuple(value)
        return cls(**parsed)


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified join or admin credential. `uid`/`sid` are empty for admin tokens without them."""

    cid: str
    key_id: str
    via: Literal["jwt", "web_only"]
    uid: str = ""
    sid: str = ""
    name: str | None = None
    description: dict[str, Any] = field(default_factory=dict)
    grants: Grants = field(default_factory=Grants)
    policy: Policy = field(default_factory=Policy)
    expires_at: float | None = None  # unix seconds; None for web-only keys
    max_participants: int | None = None  # web-only keys only
