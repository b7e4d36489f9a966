"""The storage interface: what a Redis or Postgres store would implement besides the SQLite one, and the
rules every store applies the same way (ids, limits, input checks). Key material: sfu/store/keyseal.py."""

from __future__ import annotations

import secrets
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sfu.auth.identity import Grants
from sfu.errors import BadRequest, NotFound

KeyType = Literal["secret", "web_only"]
KeyAlgorithm = Literal["HS256", "ES256", "EdDSA"]

HISTORY_PER_PIPELINE = 1000
MAX_PAGE = 1000


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class ClientRecord:
    cid: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as stored. Secrets never live here: see `Store.key_secret` and `Store.find_web_key`."""

    key_id: str
    cid: str
    type: KeyType
    algorithm: KeyAlgorithm = "HS256"
    origins: tuple[str, ...] = ()  # web-only keys
    grants: Grants = field(default_factory=Grants)  # web-only keys: what a join with it may do
    max_participants: int | None = None  # web-only keys
    public_key: str | None = None  # PEM, for ES256 / EdDSA keys
    revoked: bool = False
    created_at: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key_id": self.key_id,
            "cid": self.cid,
            "type": self.type,
            "algorithm": self.algorithm,
            "origins": list(self.origins),
            "revoked": self.revoked,
            "created_at": self.created_at,
        }
        if self.type == "web_only":
            out["grants"] = self.grants.to_wire()
            out["max_participants"] = self.max_participants
        return out


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A persisted data message of a pipeline; `to` is None when it went to everyone."""

    seq: int
    from_uid: str
    pipeline: str
    ts_ms: int
    data: Any
    to: tuple[str, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"type": "message", "from": self.from_uid, "pipeline": self.pipeline,
                "seq": self.seq, "ts": self.ts_ms, "data": self.data}


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    """A registered webhook; deliveries are signed with the secret of `key_id`, the key that registered it."""

    webhook_id: str
    cid: str
    url: str
    key_id: str
    created_at: float


@dataclass(frozen=True, slots=True)
class RecordingRecord:
    """A recording's metadata: `files` is the manifest (one JSON object per file, see sfu/recording)."""

    recording_id: str
    cid: str
    sid: str
    state: str  # recording | stopped | failed | interrupted
    started_at: float
    stopped_at: float | None = None
    feed_ids: tuple[str, ...] | None = None  # None: every feed, including ones published later
    files: tuple[dict[str, Any], ...] = ()
    error: str | None = None


class Store(Protocol):
    """Async so that a networked store fits; the SQLite store answers from the loop (short transactions)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # clients
    async def create_client(self, name: str) -> ClientRecord: ...
    async def get_client(self, cid: str) -> ClientRecord | None: ...
    async def find_client_by_name(self, name: str) -> ClientRecord | None: ...
    async def list_clients(self) -> list[ClientRecord]: ...

    # keys
    async def create_secret_key(
        self, cid: str, algorithm: KeyAlgorithm = "HS256", public_key: str | None = None
    ) -> tuple[KeyRecord, str | None]:
        """Returns the record and, for HS256, the secret (shown once)."""
        ...

    async def create_web_key(
        self, cid: str, origins: tuple[str, ...], grants: Grants, max_participants: int | None = None
    ) -> tuple[KeyRecord, str]:
        """Returns the record and the `wk_...` key value (shown once; stored only hashed)."""
        ...

    async def get_key(self, key_id: str) -> KeyRecord | None: ...
    async def key_secret(self, key_id: str) -> bytes | None:
        """The HS256 secret of a live secret key, or None (unknown, revoked, or not HS256)."""
        ...

    async def find_web_key(self, key_value: str) -> KeyRecord | None:
        """The web-only key whose value this is, or None; origins come back verified untampered."""
        ...

    async def list_keys(self, cid: str) -> list[KeyRecord]: ...
    async def revoke_key(self, key_id: str) -> bool: ...

    # data pipelines
    async def next_seq(self, cid: str, session: str, pipeline: str) -> int:
        """A `seq` that never repeats for (cid, session name, pipeline), across restarts."""
        ...

    async def append_message(self, cid: str, session: str, message: StoredMessage) -> None: ...
    async def list_messages(
        self,
        cid: str,
        session: str,
        pipeline: str,
        *,
        for_uid: str,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> list[StoredMessage]:
        """Messages visible to `for_uid` (to everyone, from it, or to it), ascending by seq."""
        ...

    async def list_pipelines(self, cid: str, session: str) -> list[str]: ...
    async def prune_messages(self, now_ms: int) -> int:
        """Drops messages past retention or beyond the last 1000 per (session, pipeline)."""
        ...

    # webhooks
    async def add_webhook(self, cid: str, url: str, key_id: str) -> WebhookRecord: ...
    async def list_webhooks(self, cid: str) -> list[WebhookRecord]: ...
    async def delete_webhook(self, cid: str, webhook_id: str) -> bool: ...

    # recordings
    async def save_recording(self, record: RecordingRecord) -> None:
        """Inserts or replaces the recording's row (written at start, on each file, and at stop)."""
        ...

    async def get_recording(self, cid: str, recording_id: str) -> RecordingRecord | None: ...
    async def list_recordings(self, cid: str) -> list[RecordingRecord]: ...
    async def interrupt_recordings(self) -> int:
        """At startup: recordings still marked running were cut by a crash; marks them interrupted."""
        ...

    # first-start credentials (sfu/bootstrap.py)
    def bootstrap_lock(self) -> AbstractAsyncContextManager[None]:
        """Held while the demo credentials are read or created: one node of a shared store at a time
        (nodes starting together would each create them); a store of one process need not lock."""
        ...

    async def load_demo(self) -> dict[str, Any] | None:
        """The demo credentials every node of a shared store uses (`{}` until the first node saved them);
        None for a store of one node, whose demo credentials live only in its data dir."""
        ...

    async def save_demo(self, data: dict[str, Any]) -> None:
        """Replaces the shared demo credentials (call it holding `bootstrap_lock`); a no-op where
        `load_demo` is None."""
        ...


# rules shared by the stores


def check_client_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise BadRequest("client name must be 1-200 characters")


async def require_client(store: Store, cid: str) -> None:
    if await store.get_client(cid) is None:
        raise NotFound(f"client {cid!r} not found")


def check_webhook_url(url: str) -> None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048:
        raise BadRequest("webhook url must be an http:// or https:// url")


def check_webhook_key(key: KeyRecord | None, cid: str) -> None:
    """Deliveries are signed with the key's secret: it must be a live HS256 secret key of `cid`."""
    if key is None or key.cid != cid or key.type != "secret" or key.algorithm != "HS256" or key.revoked:
        raise BadRequest("webhook key must be a live HS256 secret key of the same client")


def page_limit(limit: int) -> int:
    """`list_messages`' limit clamped to 1..MAX_PAGE."""
    return max(1, min(int(limit), MAX_PAGE))
