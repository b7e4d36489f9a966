"""Persisted data messages past retention are pruned when the server starts (and hourly after)."""

from __future__ import annotations

import time
from pathlib import Path

from sfu.store.base import StoredMessage
from sfu.store.sqlite import SqliteStore
from tests.support import start_server, wait_until


async def test_messages_past_retention_are_pruned_and_recent_ones_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SqliteStore(data, retention_days=7)
    await store.open()
    client = await store.create_client("acme")
    now_ms = int(time.time() * 1000)
    old_ms = now_ms - 8 * 86400 * 1000
    await store.append_message(client.cid, "room", StoredMessage(1, "alice", "chat", old_ms, "old"))
    await store.append_message(client.cid, "room", StoredMessage(2, "alice", "chat", now_ms, "new"))
    await store.close()

    async with start_server(data, message_retention_days=7) as server:

        async def only_recent_left() -> bool:
            kept = await server.server.store.list_messages(client.cid, "room", "chat", for_uid="bob")
            return [m.data for m in kept] == ["new"]

        await wait_until(only_recent_left)
