"""Data-pipeline history: seq allocation, visibility, paging, pruning; and schema migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sfu.store.base import HISTORY_PER_PIPELINE, Store, StoredMessage
from sfu.store.schema import MIGRATIONS
from sfu.store.sqlite import SqliteStore

DAY_MS = 86_400_000


def message(
    seq: int,
    from_uid: str = "alice",
    to: tuple[str, ...] | None = None,
    ts_ms: int = 1_000,
    pipeline: str = "chat",
) -> StoredMessage:
    return StoredMessage(seq, from_uid, pipeline, ts_ms, {"n": seq}, to)


async def fill(store: Store, count: int, **kwargs: object) -> None:
    for seq in range(1, count + 1):
        await store.append_message("c_1", "room", message(seq, **kwargs))  # type: ignore[arg-type]


async def test_next_seq_counts_up_per_cid_session_and_pipeline(store: Store) -> None:
    assert [await store.next_seq("c_1", "room", "chat") for _ in range(3)] == [1, 2, 3]
    assert await store.next_seq("c_1", "room", "cursor") == 1
    assert await store.next_seq("c_1", "other", "chat") == 1
    assert await store.next_seq("c_2", "room", "chat") == 1


async def test_next_seq_never_repeats_across_a_reopen(data_dir: Path) -> None:
    store = SqliteStore(data_dir)
    await store.open()
    first = [await store.next_seq("c_1", "room", "chat") for _ in range(5)]
    await store.close()
    store = SqliteStore(data_dir)
    await store.open()
    second = [await store.next_seq("c_1", "room", "chat") for _ in range(5)]
    await store.close()
    assert not set(first) & set(second)
    assert second[0] > first[-1]


async def test_seq_survives_pruning_all_messages(store: Store) -> None:
    seq = await store.next_seq("c_1", "room", "chat")
    await store.append_message("c_1", "room", message(seq, ts_ms=0))
    assert await store.prune_messages(now_ms=30 * DAY_MS) == 1
    assert await store.next_seq("c_1", "room", "chat") == seq + 1


async def test_messages_round_trip_with_their_data(store: Store) -> None:
    sent = StoredMessage(7, "alice", "chat", 123, {"text": "hé", "list": [1, None, True]}, ("bob",))
    await store.append_message("c_1", "room", sent)
    assert await store.list_messages("c_1", "room", "chat", for_uid="bob") == [sent]


@pytest.mark.parametrize(
    ("for_uid", "visible"),
    [("alice", [1, 2, 3, 4]), ("bob", [1, 2, 4]), ("carol", [1, 3]), ("dave", [1])],
)
async def test_a_message_is_visible_to_everyone_its_sender_and_its_recipients(
    store: Store, for_uid: str, visible: list[int]
) -> None:
    await store.append_message("c_1", "room", message(1))
    await store.append_message("c_1", "room", message(2, to=("bob",)))
    await store.append_message("c_1", "room", message(3, to=("carol",)))
    await store.append_message("c_1", "room", message(4, from_uid="bob", to=("alice",)))
    page = await store.list_messages("c_1", "room", "chat", for_uid=for_uid)
    assert [m.seq for m in page] == visible


async def test_a_uid_that_is_a_substring_of_a_recipient_sees_nothing_private(store: Store) -> None:
    await store.append_message("c_1", "room", message(1, to=("bob-1",)))
    assert await store.list_messages("c_1", "room", "chat", for_uid="bob") == []


async def test_history_is_scoped_to_cid_session_and_pipeline(store: Store) -> None:
    await store.append_message("c_1", "room", message(1))
    await store.append_message("c_2", "room", message(2))
    await store.append_message("c_1", "hall", message(3))
    await store.append_message("c_1", "room", message(4, pipeline="cursor"))
    assert [m.seq for m in await store.list_messages("c_1", "room", "chat", for_uid="x")] == [1]
    assert await store.list_pipelines("c_1", "room") == ["chat", "cursor"]
    assert await store.list_pipelines("c_1", "none") == []


async def test_the_default_page_is_the_newest_messages_ascending(store: Store) -> None:
    await fill(store, 120)
    page = await store.list_messages("c_1", "room", "chat", for_uid="x")
    assert [m.seq for m in page] == list(range(71, 121))


async def test_before_pages_backwards_in_ascending_order(store: Store) -> None:
    await fill(store, 120)
    page = await store.list_messages("c_1", "room", "chat", for_uid="x", before=71, limit=30)
    assert [m.seq for m in page] == list(range(41, 71))
    page = await store.list_messages("c_1", "room", "chat", for_uid="x", before=5, limit=30)
    assert [m.seq for m in page] == [1, 2, 3, 4]


async def test_after_reads_forward_from_a_point(store: Store) -> None:
    await fill(store, 120)
    page = await store.list_messages("c_1", "room", "chat", for_uid="x", after=40, limit=10)
    assert [m.seq for m in page] == list(range(41, 51))
    page = await store.list_messages("c_1", "room", "chat", for_uid="x", after=115)
    assert [m.seq for m in page] == [116, 117, 118, 119, 120]


async def test_after_and_before_together_bound_a_window(store: Store) -> None:
    await fill(store, 20)
    page = await store.list_messages("c_1", "room", "chat", for_uid="x", after=5, before=9)
    assert [m.seq for m in page] == [6, 7, 8]


async def test_append_keeps_only_the_last_1000_per_pipeline(store: Store) -> None:
    await fill(store, HISTORY_PER_PIPELINE + 5)
    await store.append_message("c_1", "room", message(1, pipeline="other"))
    page = await store.list_messages("c_1", "room", "chat", for_uid="x", after=0, limit=1000)
    assert len(page) == HISTORY_PER_PIPELINE and page[0].seq == 6
    assert len(await store.list_messages("c_1", "room", "other", for_uid="x")) == 1


async def test_prune_drops_messages_older_than_retention(data_dir: Path) -> None:
    store = SqliteStore(data_dir, retention_days=2)
    await store.open()
    try:
        now = 10 * DAY_MS
        await store.append_message("c_1", "room", message(1, ts_ms=now - 3 * DAY_MS))
        await store.append_message("c_1", "room", message(2, ts_ms=now - DAY_MS))
        assert await store.prune_messages(now) == 1
        assert [m.seq for m in await store.list_messages("c_1", "room", "chat", for_uid="x")] == [2]
        assert await store.prune_messages(now) == 0
    finally:
        await store.close()


@pytest.mark.sqlite_only
async def test_prune_caps_each_pipeline_at_1000(store: SqliteStore) -> None:
    rows = [("c_1", "room", "chat", seq, "a", 5, b"1", None) for seq in range(1, 1201)]
    store.db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    assert await store.prune_messages(now_ms=5) == 200
    page = await store.list_messages("c_1", "room", "chat", for_uid="x", after=0, limit=1000)
    assert page[0].seq == 201 and page[-1].seq == 1200


@pytest.mark.sqlite_only
async def test_a_fresh_database_is_at_the_latest_schema_version(store: SqliteStore) -> None:
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_an_older_database_is_migrated_keeping_its_data(data_dir: Path) -> None:
    store = SqliteStore(data_dir)
    await store.open()
    client = await store.create_client("acme")
    await store.close()
    db = sqlite3.connect(data_dir / "sfu.db")
    db.executescript("DROP TABLE webhooks; DROP INDEX messages_by_ts; PRAGMA user_version = 1;")
    db.close()
    await store.open()
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert await store.get_client(client.cid) == client
        assert await store.list_webhooks(client.cid) == []
    finally:
        await store.close()


async def test_a_database_from_a_newer_server_is_refused(data_dir: Path) -> None:
    store = SqliteStore(data_dir)
    await store.open()
    await store.close()
    db = sqlite3.connect(data_dir / "sfu.db")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer than this server"):
        await SqliteStore(data_dir).open()


async def test_close_is_idempotent_and_use_after_close_fails_clearly(store: Store) -> None:
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.list_clients()
