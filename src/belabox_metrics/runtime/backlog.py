"""Queue figures that stay current between counts.

Counting what is pending scans the backlog, so the upload thread counts only between
cycles, and rarely (runtime/queue_figures.COST_FACTOR). A cycle blocked on a stalled destination can
last minutes (retries × remote.timeout): counted figures alone would show "0 pending"
throughout while the box fills its disk. So the last count is carried forward by what
happened since: the collection thread notes what it appended, the upload thread's counters
say what left the backlog (acknowledged, dead-lettered, dropped by the size cap, coalesced).
Two integer additions per stored batch; the next count corrects any drift (an append that
committed during the count may be seen twice, one collection round at most).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from belabox_metrics.store.views import QueueStats


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


@dataclass
class LiveBacklog:
    db_path: str
    counted: QueueStats | None = None
    appended_total: int = 0                # written by the collection thread only
    oldest_appended_ms: int | None = None  # oldest sample appended since the count
    _appended_at_count: int = 0
    _left_at_count: int = 0

    def appended(self, count: int, oldest_ms: int | None) -> None:
        """``count`` new samples stored, the oldest stamped ``oldest_ms``."""
        if count <= 0:
            return
        self.appended_total += count
        if oldest_ms is not None and (self.oldest_appended_ms is None or oldest_ms < self.oldest_appended_ms):
            self.oldest_appended_ms = oldest_ms

    def begin_count(self) -> int:
        """Before a count: what has been appended so far (pass it to ``counted_now``)."""
        return self.appended_total

    def counted_now(self, stats: QueueStats, appended_before: int, left_total: int) -> None:
        self.counted = stats
        self._appended_at_count = appended_before
        self._left_at_count = left_total
        self.oldest_appended_ms = None

    def current(self, left_total: int) -> QueueStats | None:
        """The last count, carried forward to now. ``left_total``: samples that have left the
        backlog since start (the same counter as passed to ``counted_now``)."""
        counted = self.counted
        if counted is None:
            return None
        pending = max(0, counted.pending + (self.appended_total - self._appended_at_count)
                      - (left_total - self._left_at_count))
        oldest = counted.oldest_pending_ms
        if pending == 0:
            oldest = None
        elif oldest is None:
            oldest = self.oldest_appended_ms
        return replace(counted, pending=pending, oldest_pending_ms=oldest,
                       db_bytes=_size(self.db_path), wal_bytes=_size(self.db_path + "-wal"))
