"""Queue figures for health and self-metrics: counted rarely, carried forward between
counts (runtime/backlog.py).

Counting what is pending scans the backlog (a week offline is millions of rows: seconds of
CPU on the encoder), so the next count waits COST_FACTOR times as long as this one took:
at most ~1 % of a core."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from belabox_metrics.clock import Clock
from belabox_metrics.runtime.backlog import LiveBacklog
from belabox_metrics.selfmetrics import Family
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.store.views import QueueStats

# Queue figures are counted again only after this many times the last count's duration.
COST_FACTOR = 100.0


@dataclass
class QueueFigures:
    clock: Clock
    destination: str
    backlog: LiveBacklog
    max_size: int
    # Samples that left the backlog since start (acknowledged, dead-lettered, dropped, coalesced).
    left_backlog: Callable[[], int]
    counted: QueueStats | None = None   # as last counted; current() carries it forward
    next_count_at: float = 0.0

    def refresh(self, queue: SampleQueue, *, force: bool = False) -> None:
        """Count again, when the last count's cost allows it (or ``force``)."""
        now = self.clock.monotonic()
        if not force and now < self.next_count_at:
            return
        started = time.perf_counter()
        appended = self.backlog.begin_count()
        self.counted = queue.stats(self.destination, totals=False)
        self.backlog.counted_now(self.counted, appended, self.left_backlog())
        self.next_count_at = now + COST_FACTOR * (time.perf_counter() - started)

    def current(self) -> QueueStats | None:
        """As of now, also while an upload cycle is blocked."""
        return self.backlog.current(self.left_backlog())

    def families(self) -> list[Family]:
        stats = self.current()
        oldest = stats.oldest_pending_ms if stats else None
        return [
            Family("storage.metrics_pending_upload", "gauge", "Samples stored but not yet acknowledged.",
                   [((), float(stats.pending if stats else 0))]),
            Family("storage.database_size_bytes", "gauge", "Size of the SQLite database file.",
                   [((), float(stats.db_bytes if stats else 0))]),
            Family("storage.wal_size_bytes", "gauge", "Size of the SQLite write-ahead log.",
                   [((), float(stats.wal_bytes if stats else 0))]),
            Family("storage.oldest_pending_age_seconds", "gauge", "Age of the oldest sample not yet acknowledged.",
                   [((), max(0.0, self.clock.wall() - oldest / 1000) if oldest is not None else 0.0)]),
            Family("storage.max_size_bytes", "gauge", "The database size cap (storage.max_size).",
                   [((), float(self.max_size))]),
        ]
