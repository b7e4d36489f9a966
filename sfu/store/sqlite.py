"""The embedded store: one SQLite file in WAL mode, short transactions run directly on the event loop.

Secrets are protected by `master.key`, 32 random bytes kept next to (never inside) the database, as
sfu/store/keyseal.py does for every store: HS256 secrets are encrypted with it, web-only key values are
stored only as an HMAC, and every key row carries a MAC over what decides access. A copied or edited
database file alone therefore neither yields a usable secret nor lets anyone widen a key; a row whose
MAC fails is treated as if it did not exist.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from sfu.auth.identity import Grants
from sfu.errors import Conflict
from sfu.store.base import (
    HISTORY_PER_PIPELINE,
    ClientRecord,
    KeyAlgorithm,
    KeyRecord,
    RecordingRecord,
    StoredMessage,
    WebhookRecord,
    check_client_name,
    check_webhook_key,
    check_webhook_url,
    new_id,
    page_limit,
    require_client,
)
from sfu.store.keyseal import KeySeal, check_algorithm, load_master_key
from sfu.store.schema import migrate


class SqliteStore:
    """The `Store` of sfu/store/base.py on SQLite; one connection, autocommit plus explicit BEGIN."""

    def __init__(self, data_dir: Path, *, retention_days: float = 7.0) -> None:
        self.data_dir = Path(data_dir)
        self.retention_ms = int(retention_days * 86_400_000)
        self._db: sqlite3.Connection | None = None
        self._keyseal: KeySeal | None = None

    # lifecycle

    async def open(self) -> None:
        if self._db is not None:
            return
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        db_path = self.data_dir / "sfu.db"
        is_new = not db_path.exists() or db_path.stat().st_size == 0
        self._keyseal = KeySeal(load_master_key(self.data_dir, create=is_new))
        os.close(os.open(db_path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite gives -wal/-shm the same mode
        os.chmod(db_path, 0o600)
        db = sqlite3.connect(db_path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NOTE: NORMAL survives a process crash (seq never repeats); an OS crash may lose recent commits.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            migrate(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    @property
    def keyseal(self) -> KeySeal:
        if self._keyseal is None:
            raise RuntimeError("store is not open")
        return self._keyseal

    # clients

    async def create_client(self, name: str) -> ClientRecord:
        check_client_name(name)
        record = ClientRecord(new_id("c"), name, time.time())
        try:
            self.db.execute("INSERT INTO clients VALUES (?, ?, ?)", (record.cid, name, record.created_at))
        except sqlite3.IntegrityError:
            raise Conflict(f"a client named {name!r} already exists") from None
        return record

    async def get_client(self, cid: str) -> ClientRecord | None:
        row = self.db.execute("SELECT cid, name, created_at FROM clients WHERE cid = ?", (cid,)).fetchone()
        return ClientRecord(*row) if row else None

    async def find_client_by_name(self, name: str) -> ClientRecord | None:
        row = self.db.execute("SELECT cid, name, created_at FROM clients WHERE name = ?", (name,)).fetchone()
        return ClientRecord(*row) if row else None

    async def list_clients(self) -> list[ClientRecord]:
        rows = self.db.execute("SELECT cid, name, created_at FROM clients ORDER BY created_at, cid")
        return [ClientRecord(*row) for row in rows]

    # keys

    async def create_secret_key(
        self, cid: str, algorithm: KeyAlgorithm = "HS256", public_key: str | None = None
    ) -> tuple[KeyRecord, str | None]:
        check_algorithm(algorithm)
        await require_client(self, cid)
        record, secret, secret_enc = self.keyseal.new_secret_key(cid, algorithm, public_key)
        self._insert_key(record, secret_enc=secret_enc, value_hash=None)
        return record, secret

    async def create_web_key(
        self, cid: str, origins: tuple[str, ...], grants: Grants, max_participants: int | None = None
    ) -> tuple[KeyRecord, str]:
        record, value, value_hash = self.keyseal.new_web_key(cid, origins, grants, max_participants)
        await require_client(self, cid)
        self._insert_key(record, secret_enc=None, value_hash=value_hash)
        return record, value

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = self.db.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        return self._key_from_row(row) if row else None

    async def key_secret(self, key_id: str) -> bytes | None:
        row = self.db.execute(
            f"SELECT {_KEY_COLUMNS}, secret_enc FROM keys WHERE key_id = ?", (key_id,)
        ).fetchone()
        if row is None:
            return None
        record = self._key_from_row(row[:-1])
        if record is None or record.revoked or record.algorithm != "HS256" or record.type != "secret":
            return None
        return self.keyseal.unseal(key_id, row[-1])

    async def find_web_key(self, key_value: str) -> KeyRecord | None:
        row = self.db.execute(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE value_hash = ? AND type = 'web_only'",
            (self.keyseal.value_hash(key_value),),
        ).fetchone()
        return self._key_from_row(row) if row else None

    async def list_keys(self, cid: str) -> list[KeyRecord]:
        rows = self.db.execute(
            f"SELECT {_KEY_COLUMNS} FROM keys WHERE cid = ? ORDER BY created_at, key_id", (cid,)
        ).fetchall()
        return [record for row in rows if (record := self._key_from_row(row)) is not None]

    async def revoke_key(self, key_id: str) -> bool:
        record = await self.get_key(key_id)
        if record is None or record.revoked:
            return False
        mac = self.keyseal.mac(replace(record, revoked=True))
        self.db.execute("UPDATE keys SET revoked = 1, mac = ? WHERE key_id = ?", (mac, key_id))
        return True

    # data pipelines

    async def next_seq(self, cid: str, session: str, pipeline: str) -> int:
        row = self.db.execute(
            "INSERT INTO seqs VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET last_seq = last_seq + 1"
            " RETURNING last_seq",
            (cid, session, pipeline),
        ).fetchone()
        return int(row[0])

    async def append_message(self, cid: str, session: str, message: StoredMessage) -> None:
        to = orjson.dumps(list(message.to)).decode() if message.to is not None else None
        group = (cid, session, message.pipeline)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*group, message.seq, message.from_uid, message.ts_ms, orjson.dumps(message.data), to),
            )
            db.execute(
                "DELETE FROM messages WHERE cid = ? AND session = ? AND pipeline = ? AND seq <= ("
                " SELECT seq FROM messages WHERE cid = ? AND session = ? AND pipeline = ?"
                " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (*group, *group, HISTORY_PER_PIPELINE),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

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
        limit = page_limit(limit)
        sql = (
            "SELECT seq, from_uid, pipeline, ts_ms, data, to_uids FROM messages"
            " WHERE cid = ? AND session = ? AND pipeline = ?"
            " AND (to_uids IS NULL OR from_uid = ?"
            " OR EXISTS (SELECT 1 FROM json_each(to_uids) WHERE value = ?))"
        )
        params: list[Any] = [cid, session, pipeline, for_uid, for_uid]
        if before is not None:
            sql += " AND seq < ?"
            params.append(before)
        if after is not None:
            sql += " AND seq > ?"
            params.append(after)
        # `after` reads forward from a point (what was missed); otherwise the newest page before `before`.
        sql += " ORDER BY seq ASC LIMIT ?" if after is not None else " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        rows = self.db.execute(sql, params).fetchall()
        if after is None:
            rows.reverse()
        return [
            StoredMessage(seq, from_uid, pipe, ts_ms, orjson.loads(data),
                          tuple(orjson.loads(to)) if to is not None else None)
            for seq, from_uid, pipe, ts_ms, data, to in rows
        ]

    async def list_pipelines(self, cid: str, session: str) -> list[str]:
        rows = self.db.execute(
            "SELECT DISTINCT pipeline FROM messages WHERE cid = ? AND session = ? ORDER BY pipeline",
            (cid, session),
        )
        return [row[0] for row in rows]

    async def prune_messages(self, now_ms: int) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            cutoff = now_ms - self.retention_ms
            expired = db.execute("DELETE FROM messages WHERE ts_ms < ?", (cutoff,)).rowcount
            excess = db.execute(
                "DELETE FROM messages WHERE rowid IN (SELECT rowid FROM (SELECT rowid, ROW_NUMBER()"
                " OVER (PARTITION BY cid, session, pipeline ORDER BY seq DESC) AS rank FROM messages)"
                " WHERE rank > ?)",
                (HISTORY_PER_PIPELINE,),
            ).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(expired + excess)

    # webhooks

    async def add_webhook(self, cid: str, url: str, key_id: str) -> WebhookRecord:
        check_webhook_url(url)
        check_webhook_key(await self.get_key(key_id), cid)
        record = WebhookRecord(new_id("wh"), cid, url, key_id, time.time())
        self.db.execute("INSERT INTO webhooks VALUES (?, ?, ?, ?, ?)",
                        (record.webhook_id, cid, url, key_id, record.created_at))
        return record

    async def list_webhooks(self, cid: str) -> list[WebhookRecord]:
        rows = self.db.execute(
            "SELECT webhook_id, cid, url, key_id, created_at FROM webhooks WHERE cid = ?"
            " ORDER BY created_at, webhook_id",
            (cid,),
        )
        return [WebhookRecord(*row) for row in rows]

    async def delete_webhook(self, cid: str, webhook_id: str) -> bool:
        cursor = self.db.execute("DELETE FROM webhooks WHERE cid = ? AND webhook_id = ?", (cid, webhook_id))
        return cursor.rowcount > 0

    # recordings

    async def save_recording(self, record: RecordingRecord) -> None:
        feed_ids = orjson.dumps(list(record.feed_ids)).decode() if record.feed_ids is not None else None
        self.db.execute(
            "INSERT OR REPLACE INTO recordings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.recording_id, record.cid, record.sid, record.state, record.started_at, record.stopped_at,
             feed_ids, orjson.dumps(list(record.files)).decode(), record.error),
        )

    async def get_recording(self, cid: str, recording_id: str) -> RecordingRecord | None:
        row = self.db.execute(
            f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE cid = ? AND recording_id = ?",
            (cid, recording_id),
        ).fetchone()
        return _recording_from_row(row) if row else None

    async def list_recordings(self, cid: str) -> list[RecordingRecord]:
        rows = self.db.execute(
            f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE cid = ? ORDER BY started_at, recording_id",
            (cid,),
        ).fetchall()
        return [_recording_from_row(row) for row in rows]

    async def interrupt_recordings(self) -> int:
        cursor = self.db.execute(
            "UPDATE recordings SET state = 'interrupted', stopped_at = ? WHERE state = 'recording'",
            (time.time(),),
        )
        return int(cursor.rowcount)

    # first-start credentials: one node, so they live in the data dir's file alone (sfu/bootstrap.py)

    @asynccontextmanager
    async def bootstrap_lock(self) -> AsyncIterator[None]:
        yield

    async def load_demo(self) -> dict[str, Any] | None:
        return None

    async def save_demo(self, data: dict[str, Any]) -> None:
        pass

    # internals

    def _insert_key(self, record: KeyRecord, *, secret_enc: bytes | None, value_hash: bytes | None) -> None:
        self.db.execute(
            f"INSERT INTO keys ({_KEY_COLUMNS}, secret_enc, value_hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.key_id, record.cid, record.type, record.algorithm,
             orjson.dumps(list(record.origins)).decode(), orjson.dumps(record.grants.to_wire()).decode(),
             record.max_participants, record.public_key, int(record.revoked), record.created_at,
             self.keyseal.mac(record), secret_enc, value_hash),
        )

    def _key_from_row(self, row: tuple[Any, ...]) -> KeyRecord | None:
        """The record if its MAC verifies under master.key; a tampered row is logged and ignored."""
        key_id, cid, type_, algorithm, origins, grants, max_parts, public_key, revoked, created, mac = row

        def read() -> tuple[Any, ...]:
            return (cid, type_, algorithm, orjson.loads(origins), orjson.loads(grants), max_parts,
                    public_key, revoked, created)

        return self.keyseal.open_record(key_id, read, mac)


_KEY_COLUMNS = (
    "key_id, cid, type, algorithm, origins, grants, max_participants, public_key, revoked, created_at, mac"
)
_RECORDING_COLUMNS = "recording_id, cid, sid, state, started_at, stopped_at, feed_ids, files, error"


def _recording_from_row(row: tuple[Any, ...]) -> RecordingRecord:
    recording_id, cid, sid, state, started_at, stopped_at, feed_ids, files, error = row
    return RecordingRecord(recording_id, cid, sid, state, started_at, stopped_at,
                           tuple(orjson.loads(feed_ids)) if feed_ids is not None else None,
                           tuple(orjson.loads(files)), error)
