"""The SQLite schema as numbered steps: `PRAGMA user_version` says how many a database file has applied."""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger("sfu.store")

# Each step moves the schema from version i to i + 1 (`PRAGMA user_version`); never edit a shipped step.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE clients (
        cid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
    CREATE TABLE keys (
        key_id TEXT PRIMARY KEY, cid TEXT NOT NULL REFERENCES clients(cid), type TEXT NOT NULL,
        algorithm TEXT NOT NULL, secret_enc BLOB, value_hash BLOB UNIQUE, origins TEXT NOT NULL,
        grants TEXT NOT NULL, max_participants INTEGER, public_key TEXT, revoked INTEGER NOT NULL,
        created_at REAL NOT NULL, mac BLOB NOT NULL);
    CREATE INDEX keys_by_cid ON keys(cid);
    CREATE TABLE seqs (
        cid TEXT NOT NULL, session TEXT NOT NULL, pipeline TEXT NOT NULL, last_seq INTEGER NOT NULL,
        PRIMARY KEY (cid, session, pipeline)) WITHOUT ROWID;
    CREATE TABLE messages (
        cid TEXT NOT NULL, session TEXT NOT NULL, pipeline TEXT NOT NULL, seq INTEGER NOT NULL,
        from_uid TEXT NOT NULL, ts_ms INTEGER NOT NULL, data BLOB NOT NULL, to_uids TEXT,
        PRIMARY KEY (cid, session, pipeline, seq));
    """,
    """
    CREATE INDEX messages_by_ts ON messages(ts_ms);
    CREATE TABLE webhooks (
        webhook_id TEXT PRIMARY KEY, cid TEXT NOT NULL REFERENCES clients(cid), url TEXT NOT NULL,
        key_id TEXT NOT NULL REFERENCES keys(key_id), created_at REAL NOT NULL);
    CREATE INDEX webhooks_by_cid ON webhooks(cid);
    """,
    """
    CREATE TABLE IF NOT EXISTS recordings (
        recording_id TEXT PRIMARY KEY, cid TEXT NOT NULL, sid TEXT NOT NULL, state TEXT NOT NULL,
        started_at REAL NOT NULL, stopped_at REAL, feed_ids TEXT, files TEXT NOT NULL, error TEXT);
    CREATE INDEX IF NOT EXISTS recordings_by_cid ON recordings(cid, started_at);
    """,
)


def migrate(db: sqlite3.Connection) -> None:
    """Runs every step past the file's `user_version`, each in one transaction with its version bump."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise RuntimeError(f"database schema version {version} is newer than this server ({len(MIGRATIONS)})")
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in step.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info("store schema migrated to version %d", number)
