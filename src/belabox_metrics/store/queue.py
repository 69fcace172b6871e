"""The durable queue: append samples, read what a destination has not acknowledged, move
its cursor. It knows nothing of HTTP or formats.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from belabox_metrics.model import Sample, decode_labels, encode_labels
from belabox_metrics.store.db import connect, transaction
from belabox_metrics.store.migrations import migrate
from belabox_metrics.store.schema import MIGRATIONS


class StoredSample(NamedTuple):
    id: int
    sample: Sample


def _row_to_stored(row: tuple[int, int, str, float | None, str]) -> StoredSample:
    row_id, timestamp_ms, name, value, labels = row
    return StoredSample(row_id, Sample(name, value, timestamp_ms, decode_labels(labels)))


_SELECT = "SELECT id, timestamp, metric_name, metric_value, labels FROM metrics"


class SampleQueue:
    def __init__(self, conn: sqlite3.Connection, device_id: str) -> None:
        self.conn = conn
        self.device_id = device_id

    @classmethod
    def open(cls, path: str, device_id: str) -> SampleQueue:
        conn = connect(path)
        try:
            migrate(conn, MIGRATIONS, path=path)
        except Exception:
            conn.close()
            raise
        return cls(conn, device_id)

    def close(self) -> None:
        self.conn.close()

    def append(self, samples: Iterable[Sample]) -> int:
        """Store samples in one transaction; returns how many. Text samples are not
        supported by schema v1 and are skipped."""
        rows = [
            (s.timestamp_ms, s.name, s.value, self.device_id, encode_labels(s.labels))
            for s in samples
            if s.value is not None
        ]
        if not rows:
            return 0
        with transaction(self.conn):
            self.conn.executemany(
                "INSERT INTO metrics (timestamp, metric_name, metric_value, device_id, labels)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def cursor(self, destination: str) -> int:
        row = self.conn.execute(
            "SELECT last_id FROM upload_cursor WHERE destination = ?", (destination,)
        ).fetchone()
        return int(row[0]) if row else 0

    def pending(self, destination: str, limit: int) -> list[StoredSample]:
        """The oldest samples the destination has not acknowledged, in insertion order."""
        after = self.cursor(destination)
        rows = self.conn.execute(
            f"{_SELECT} WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
        return [_row_to_stored(r) for r in rows]

    def ack(self, destination: str, last_id: int) -> None:
        """Everything up to ``last_id`` was accepted. The cursor never moves backwards."""
        now_ms = int(time.time() * 1000)
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO upload_cursor (destination, last_id, updated_at_ms) VALUES (?, ?, ?)"
                " ON CONFLICT(destination) DO UPDATE SET"
                " last_id = MAX(last_id, excluded.last_id), updated_at_ms = excluded.updated_at_ms",
                (destination, last_id, now_ms),
            )

    def pending_count(self, destination: str) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM metrics WHERE id > ?", (self.cursor(destination),)
        ).fetchone()
        return int(row[0])

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0])

    def recent(self, metric: str | None = None, last: int = 20) -> list[StoredSample]:
        """The newest ``last`` samples (optionally of one metric), oldest first."""
        if metric is None:
            rows = self.conn.execute(f"{_SELECT} ORDER BY id DESC LIMIT ?", (last,)).fetchall()
        else:
            rows = self.conn.execute(
                f"{_SELECT} WHERE metric_name = ? ORDER BY id DESC LIMIT ?", (metric, last)
            ).fetchall()
        return [_row_to_stored(r) for r in reversed(rows)]

    def all(self) -> Sequence[StoredSample]:
        return [_row_to_stored(r) for r in self.conn.execute(f"{_SELECT} ORDER BY id")]
