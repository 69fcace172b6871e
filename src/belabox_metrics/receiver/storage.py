"""The receiver's own SQLite database: received samples, deduplicated by sample key.

A batch re-sent after a lost acknowledgement carries the same (device, name, labels,
timestamp) keys, so INSERT OR IGNORE stores it once and the answer reports the rest as
duplicates. The connection lives on one dedicated thread (sqlite3 connections are not
shared across threads) so blocking disk work never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from belabox_metrics.model import Labels, decode_labels, encode_labels
from belabox_metrics.receiver.validate import ReceivedSample
from belabox_metrics.store.db import connect, transaction
from belabox_metrics.store.migrations import Migration, migrate

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "receiver: received samples keyed by device, name, labels, timestamp",
        (
            """CREATE TABLE received_samples (
                device_id TEXT NOT NULL,
                name TEXT NOT NULL,
                labels TEXT NOT NULL DEFAULT '',  -- canonical JSON, sorted keys; '' for none
                timestamp_ms INTEGER NOT NULL,    -- sample time, ms since the Unix epoch, UTC
                value REAL NOT NULL,
                received_at_ms INTEGER NOT NULL,
                PRIMARY KEY (device_id, name, labels, timestamp_ms)
            ) WITHOUT ROWID""",
            "CREATE INDEX idx_received_samples_received_at ON received_samples(received_at_ms)",
        ),
    ),
)

StoredSample = tuple[str, str, Labels, int, float]
T = TypeVar("T")

_INSERT = (
    "INSERT OR IGNORE INTO received_samples "
    "(device_id, name, labels, timestamp_ms, value, received_at_ms) VALUES (?, ?, ?, ?, ?, ?)"
)


def open_database(path: str) -> sqlite3.Connection:
    conn = connect(path)
    try:
        migrate(conn, MIGRATIONS, path=path)
    except BaseException:
        conn.close()
        raise
    return conn


def insert_samples(
    conn: sqlite3.Connection, device_id: str, samples: Sequence[ReceivedSample], received_at_ms: int
) -> int:
    """Store one batch in one transaction; returns how many rows were new."""
    rows = [
        (device_id, s.name, encode_labels(s.labels), s.timestamp_ms, s.value, received_at_ms)
        for s in samples
    ]
    with transaction(conn):
        before = conn.total_changes
        conn.executemany(_INSERT, rows)
        return conn.total_changes - before


def count_samples(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM received_samples").fetchone()[0])


def read_samples(db_path: str | Path) -> list[StoredSample]:
    """Every stored sample of a receiver database, sorted by key.

    Each item is (device_id, name, labels tuple, timestamp_ms, value); opened read-only so
    a running receiver is not disturbed.
    """
    uri = Path(db_path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        rows = conn.execute(
            "SELECT device_id, name, labels, timestamp_ms, value FROM received_samples "
            "ORDER BY device_id, name, labels, timestamp_ms"
        ).fetchall()
    finally:
        conn.close()
    return [(str(d), str(n), decode_labels(lab), int(t), float(v)) for d, n, lab, t, v in rows]


class SampleStore:
    """Async face of the database: every call runs on the one thread owning the connection."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receiver-db")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    def _open(self) -> None:
        self._conn = open_database(self.path)

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the sample store is not open")
        return self._conn

    def _insert(self, device_id: str, samples: Sequence[ReceivedSample]) -> int:
        return insert_samples(self._require(), device_id, samples, int(time.time() * 1000))

    def _count(self) -> int:
        return count_samples(self._require())

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def open(self) -> None:
        await self._run(self._open)

    async def insert(self, device_id: str, samples: Sequence[ReceivedSample]) -> int:
        return await self._run(self._insert, device_id, samples)

    async def count(self) -> int:
        return await self._run(self._count)

    async def close(self) -> None:
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)
