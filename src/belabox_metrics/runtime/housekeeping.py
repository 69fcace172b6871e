"""Retention, the disk cap and WAL checkpoints, run from the upload thread between cycles
(also when the uplink is down, so an offline box never fills its disk)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from belabox_metrics.clock import Clock
from belabox_metrics.config import Settings
from belabox_metrics.logs import event
from belabox_metrics.selfmetrics import Family
from belabox_metrics.store.queue import SampleQueue


@dataclass
class Housekeeping:

    queue: SampleQueue
    settings: Settings
    destinations: Sequence[str]
    clock: Clock
    log: logging.Logger
    every: float = 60.0
    next_prune: float = 0.0
    next_checkpoint: float = 0.0
    dropped_unsent_total: int = 0
    pruned_total: int = 0
    coalesced_total: int = 0
    checkpoints: int = 0

    def __post_init__(self) -> None:
        now = self.clock.monotonic()
        self.next_checkpoint = now + self.settings.storage.wal_checkpoint_interval

    def run(self, *, final: bool = False) -> None:
        now = self.clock.monotonic()
        storage = self.settings.storage
        if now >= self.next_prune:
            self.next_prune = now + self.every
            cutoff_ms = int((self.clock.wall() - storage.retention) * 1000)
            pruned = self.queue.prune_sent(self.destinations, cutoff_ms)
            self.pruned_total += pruned
            if storage.coalesce_after is not None:
                older_than_ms = int((self.clock.wall() - storage.coalesce_after) * 1000)
                coalesced = self.queue.coalesce_unsent(self.destinations, older_than_ms,
                                                       int(storage.coalesce_interval * 1000))
                if coalesced:
                    self.coalesced_total += coalesced
                    event(self.log, logging.INFO, "coalesced the old backlog (storage.coalesce_after)",
                          deleted=coalesced, deleted_total=self.coalesced_total,
                          keep_one_per=f"{storage.coalesce_interval:g}s")
            dropped = self.queue.enforce_max_size(storage.max_size, self.destinations)
            if dropped:
                self.dropped_unsent_total += dropped
                event(self.log, logging.WARNING, "storage.max_size reached: dropped the oldest unsent samples",
                      dropped=dropped, dropped_total=self.dropped_unsent_total, max_size=storage.max_size)
        wal_path = storage.path + "-wal"
        wal_bytes = os.path.getsize(wal_path) if os.path.exists(wal_path) else 0
        if final or now >= self.next_checkpoint or wal_bytes > storage.wal_checkpoint_size:
            self.next_checkpoint = now + storage.wal_checkpoint_interval
            self.checkpoint(wal_bytes, truncate=final or wal_bytes > storage.wal_checkpoint_size)

    def checkpoint(self, wal_bytes: int, *, truncate: bool = False) -> None:
        """PASSIVE on the interval: the WAL file keeps its size and is overwritten in place (a
        truncated WAL grows again, and on ext4 each commit that grows it is a journal commit
        too: twice the flash writes). TRUNCATE at shutdown, and when the WAL has grown past
        ``storage.wal_checkpoint_size`` (a reader held it, or a backlog was stored at once)."""
        started = time.perf_counter()
        mode = "TRUNCATE" if truncate else "PASSIVE"
        busy = self.queue.conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0]
        wal_path = self.settings.storage.path + "-wal"
        after = os.path.getsize(wal_path) if os.path.exists(wal_path) else 0
        self.checkpoints += 1
        event(self.log, logging.INFO, "wal checkpoint", duration_ms=round((time.perf_counter() - started) * 1000, 1),
              bytes_reclaimed=max(0, wal_bytes - after), wal_bytes=after, busy=bool(busy))

    def families(self) -> list[Family]:
        return [
            Family("storage.dropped_samples_total", "counter",
                   "Unsent samples deleted because storage.max_size was reached.",
                   [((), float(self.dropped_unsent_total))]),
            Family("storage.coalesced_samples_total", "counter",
                   "Unsent samples removed by downsampling the old backlog (storage.coalesce_after).",
                   [((), float(self.coalesced_total))]),
        ]

