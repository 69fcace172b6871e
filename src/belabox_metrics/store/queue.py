"""The durable queue as one object, for callers that want all of it: a thin facade over the
store's rooms.

- store/series.py: the series catalogue (ids, label caches, the lane of a series, rows);
- store/progress.py: upload progress per (destination, lane) and THE one sent rule;
- store/outbox.py: append, claims, acknowledgements, class moves (the transaction);
- store/held.py, store/retention.py, store/views.py: held samples, what may leave the
  database, and read-only views.

Every name callers used from this module is still importable from it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Sequence

from belabox_metrics import __version__
from belabox_metrics.model import Sample
from belabox_metrics.store import held, retention, views
from belabox_metrics.store.db import STORE_PAGE_SIZE, connect
from belabox_metrics.store.migrations import migrate
from belabox_metrics.store.outbox import _IN_LANE, SKIP_AHEAD_MS, Claim, Outbox
from belabox_metrics.store.progress import Key, Progress, UploadProgress, UploadState
from belabox_metrics.store.schema import MIGRATIONS
from belabox_metrics.store.series import DEFAULT_LANE, LANES, NUMERIC, TEXT, Row, SeriesLanes
from belabox_metrics.store.views import DeadLetter, QueueStats

__all__ = [
    "DEFAULT_LANE", "LANES", "NUMERIC", "SKIP_AHEAD_MS", "TEXT", "_IN_LANE", "Claim", "DeadLetter", "Key",
    "Progress", "QueueStats", "Row", "SampleQueue", "SeriesLanes", "UploadProgress", "UploadState",
]


class SampleQueue(Outbox):
    @classmethod
    def open(cls, path: str, device_id: str | None = None, lanes: SeriesLanes | None = None,
             *, owns_upload_state: bool = False, progress: UploadProgress | None = None) -> SampleQueue:
        """``owns_upload_state``: this queue is the only one in the process that writes upload
        progress (the upload thread's), so it caches it; see ``__init__``. ``progress``: shared
        by the process's queues, acknowledgements ride on the next append's commit."""
        conn = connect(path, page_size=STORE_PAGE_SIZE)
        try:
            migrate(conn, MIGRATIONS, path=path, keep_copy=True)
        except Exception:
            conn.close()
            raise
        return cls(conn, path, lanes, owns_upload_state=owns_upload_state, progress=progress)

    def close(self) -> None:
        if self._owner and self.shared_progress is not None:
            with contextlib.suppress(sqlite3.Error):
                self.save_progress()
        self.conn.close()

    # -- samples stamped by an untrusted clock ---------------------------------------
    def hold(self, samples: Iterable[Sample], boot_id: str, wall_minus_monotonic_ms: int) -> int:
        return held.hold(self, samples, boot_id, wall_minus_monotonic_ms)

    def release_held(self, boot_id: str, wall_minus_monotonic_ms: int) -> int:
        return held.release_held(self, boot_id, wall_minus_monotonic_ms)

    def held_count(self) -> int:
        return held.held_count(self)

    def newest_ts(self) -> int | None:
        row = self.conn.execute("SELECT MAX(ts) FROM samples").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    # -- inspection ------------------------------------------------------------------
    def pending_by_lane(self, destination: str, states: dict[int, UploadState] | None = None) -> dict[int, int]:
        return views.pending_by_lane(self, destination, states)

    def pending_count(self, destination: str) -> int:
        return views.pending_count(self, destination)

    def oldest_pending_ms(self, destination: str, states: dict[int, UploadState] | None = None) -> int | None:
        return views.oldest_pending_ms(self, destination, states)

    def last_acknowledged_ms(self, destination: str) -> int | None:
        return views.last_acknowledged_ms(self, destination)

    def count(self) -> int:
        return views.count(self)

    def recent(self, metric: str | None = None, last: int = 20,
               destination: str | None = None) -> list[tuple[Row, bool]]:
        return views.recent(self, metric, last, destination)

    def latest_per_series(self, since_ms: int) -> list[Row]:
        return views.latest_per_series(self, since_ms)

    def all(self) -> list[Row]:
        return views.all_rows(self)

    def dead_letters(self, destination: str | None = None) -> list[tuple[Row, str]]:
        return views.dead_letters(self, destination)

    def dead_letter_entries(self, destination: str | None = None, since_ms: int | None = None,
                            metric: str | None = None) -> list[DeadLetter]:
        return views.dead_letter_entries(self, destination, since_ms, metric)

    @staticmethod
    def _dead_filter(destination: str | None, since_ms: int | None,
                     metric: str | None) -> tuple[str, tuple[object, ...]]:
        return views.dead_filter(destination, since_ms, metric)

    def stats(self, destination: str, *, totals: bool = True) -> QueueStats:
        return views.stats(self, destination, totals=totals)

    # -- sessions ----------------------------------------------------------------------
    def start_session(self, boot_id: str, started_at_ms: int, monotonic_now: float) -> int:
        with self._write():
            cursor = self.conn.execute(
                "INSERT INTO sessions (boot_id, started_at_ms, monotonic_at_start, version) VALUES (?, ?, ?, ?)",
                (boot_id, started_at_ms, monotonic_now, __version__),
            )
        return int(cursor.lastrowid or 0)

    # -- housekeeping ----------------------------------------------------------------
    def prune_sent(self, destinations: Sequence[str], older_than_ms: int) -> int:
        return retention.prune_sent(self, destinations, older_than_ms)

    def coalesce_unsent(self, destinations: Sequence[str], older_than_ms: int, bucket_ms: int,
                        max_rows: int = 200_000) -> int:
        return retention.coalesce_unsent(self, destinations, older_than_ms, bucket_ms, max_rows)

    def used_bytes(self) -> int:
        return retention.used_bytes(self)

    def enforce_max_size(self, max_bytes: int, destinations: Sequence[str], step: int = 5000) -> int:
        return retention.enforce_max_size(self, max_bytes, destinations, step)
