"""The clock-trust gate between the collection loop and the queue.

A sample stamped by a wall clock that cannot be trusted (a boot at 1970, a clock behind
the newest stored sample, a sync daemon that has not synced) is held with its boot id and
monotonic time instead of stored; once the clock can be trusted, the held samples are
re-stamped from the monotonic clock (exact within one boot) before anything new is stored.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from belabox_metrics.clock import Clock
from belabox_metrics.logs import event
from belabox_metrics.model import Sample
from belabox_metrics.runtime.backlog import LiveBacklog
from belabox_metrics.selfmetrics import Family
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.store.recovery import is_corruption
from belabox_metrics.timesync import ClockTrust


@dataclass
class ClockGate:
    clock: Clock
    boot_id: str
    log: logging.Logger
    backlog: LiveBacklog
    # Told of a corrupt database met while storing (the agent stops and the restart checks).
    on_corruption: Callable[[BaseException], None]
    trust: ClockTrust | None = None   # None: every clock is trusted (monitoring.hold_untrusted_clock off)
    held_total: int = 0
    restamped_total: int = 0

    def trusted(self) -> bool:
        return self.trust is None or self.trust.trusted()

    @property
    def reason(self) -> str:
        return self.trust.reason if self.trust is not None else "not checked"

    def store(self, queue: SampleQueue, samples: list[Sample]) -> int:
        """Append, unless the wall clock cannot be trusted: then hold the samples with their
        monotonic time, and re-stamp them as soon as it can. Returns how many were kept."""
        offset_ms = int((self.clock.wall() - self.clock.monotonic()) * 1000)
        if self.trust is not None and not self.trust.trusted():
            held = queue.hold(samples, self.boot_id, offset_ms)
            if self.held_total == 0:
                event(self.log, logging.WARNING, "wall clock not trusted: holding samples until it is",
                      reason=self.trust.reason)
            self.held_total += held
            return held
        if self.held_total and self.trust is not None:
            released = queue.release_held(self.boot_id, offset_ms)
            self.backlog.appended(released, None)
            self.restamped_total += released
            self.held_total = 0
            event(self.log, logging.INFO, "clock trusted again: re-stamped held samples from the monotonic clock",
                  count=released, reason=self.trust.reason)
        try:
            stored = queue.append(samples)
            self.backlog.appended(stored, samples[0].timestamp_ms if stored else None)  # batches are in time order
            return stored
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                self.on_corruption(exc)
            raise

    def families(self) -> list[Family]:
        return [
            Family("storage.held_samples", "gauge", "Samples held until the wall clock can be trusted.",
                   [((), float(self.held_total))]),
            Family("storage.restamped_samples_total", "counter", "Held samples re-stamped after a clock sync.",
                   [((), float(self.restamped_total))]),
            Family("time.clock_trusted", "gauge", "1 while the wall clock is trusted, 0 while samples are held.",
                   [((), 1.0 if self.trusted() else 0.0)]),
        ]
