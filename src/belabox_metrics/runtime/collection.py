"""The collection loop: every due collector on its fixed grid, their samples stored in one
transaction per round, and the collectors' own counters exposed as self-metrics.

A round's samples that cannot be stored (disk full, database locked) are kept in memory
and retried with the next round, up to MAX_UNSTORED; beyond it the oldest are dropped and
counted."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from belabox_metrics.clock import Clock
from belabox_metrics.collectors.base import Collector, MetricSettings
from belabox_metrics.logs import event, foreign_text
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.sdnotify import Heartbeat
from belabox_metrics.selfmetrics import Family, Histogram

MAX_UNSTORED = 100_000


def next_due(previous_due: float, interval: float, now: float) -> float:
    """The first tick of the fixed grid ``previous_due + k * interval`` that is after ``now``.

    Ticks are never re-based on when a run finished, so slow runs do not make the schedule
    drift; ticks missed entirely (a run longer than the interval, a suspended process) are
    skipped rather than run in a burst.
    """
    candidate = previous_due + interval
    if candidate > now:
        return candidate
    missed = math.floor((now - previous_due) / interval)
    return previous_due + (missed + 1) * interval


@dataclass
class ScheduledMetric:
    settings: MetricSettings
    collector: Collector
    due: float
    runs: int = 0
    failures: int = 0
    samples: int = 0
    last_error: str | None = None
    last_duration_s: float = 0.0
    last_success_wall: float | None = None
    duration: Histogram = field(default_factory=Histogram)


@dataclass
class CollectionLoop:
    metrics: Sequence[ScheduledMetric]
    store: Callable[[list[Sample]], int]
    clock: Clock
    log: logging.Logger
    unstored: list[Sample] = field(default_factory=list)
    dropped_unstored: int = 0
    store_failures: int = 0
    heartbeat: Heartbeat | None = None
    # Wake at least this often, so the watchdog sees the loop alive between long intervals.
    max_sleep: float = 5.0
    # How long one round of collectors may take before the loop counts as hung.
    run_budget: float = 60.0
    # Told each collector's round: (collector name, its samples, or None when it failed).
    observe: Callable[[str, Sequence[Sample] | None], None] | None = None
    # The timestamp of a round, in ms (the agent's: never back, see timesync.SampleStamps).
    stamp: Callable[[], int] | None = None

    def run(self, stop: threading.Event, max_rounds: int | None = None) -> None:
        rounds = 0
        while not stop.is_set():
            if max_rounds is not None and rounds >= max_rounds:
                return
            now = self.clock.monotonic()
            due = [m for m in self.metrics if m.due <= now]
            if not due:
                sleep = min(min(m.due for m in self.metrics) - now, self.max_sleep)
                if self.heartbeat is not None:
                    self.heartbeat.beat(sleep + 10)
                if self.clock.wait(sleep, stop):
                    return
                continue
            rounds += 1
            if self.heartbeat is not None:
                # Collectors have their own timeouts (SRT sources: a few seconds each).
                self.heartbeat.beat(self.run_budget)
            self.run_due(due)

    def run_due(self, due: Sequence[ScheduledMetric]) -> None:
        now_ms = self.stamp() if self.stamp is not None else int(self.clock.wall() * 1000)
        batch: list[Sample] = []
        for metric in due:
            batch.extend(self.collect_one(metric, now_ms))
            metric.due = next_due(metric.due, metric.settings.interval, self.clock.monotonic())
        self._store(batch)

    def collect_one(self, metric: ScheduledMetric, now_ms: int) -> list[Sample]:
        started = time.perf_counter()
        metric.runs += 1
        try:
            samples = metric.collector.collect(now_ms)
        except Exception as exc:  # a failing collector must never stop the others
            metric.failures += 1
            metric.last_error = foreign_text(f"{type(exc).__name__}: {exc}", 500)
            # Log the first failure and then every 60th, so a missing sensor does not
            # flood the journal once a second.
            if metric.failures == 1 or metric.failures % 60 == 0:
                event(self.log, logging.WARNING, "collector failed", collector=metric.settings.name,
                      error=str(exc), error_type=type(exc).__name__, failures=metric.failures)
            if self.observe is not None:
                self.observe(metric.settings.name, None)
            return []
        finally:
            metric.last_duration_s = time.perf_counter() - started
            metric.duration.observe(metric.last_duration_s)
        metric.last_error = None
        metric.last_success_wall = self.clock.wall()
        metric.samples += len(samples)
        if self.observe is not None:
            self.observe(metric.settings.name, samples)
        event(self.log, logging.DEBUG, "collected", collector=metric.settings.name,
              count=len(samples), duration_ms=round(metric.last_duration_s * 1000, 3))
        return samples

    def _store(self, batch: list[Sample]) -> None:
        pending = self.unstored + batch
        if not pending:
            return
        try:
            self.store(pending)
        except Exception as exc:
            self.store_failures += 1
            overflow = len(pending) - MAX_UNSTORED
            if overflow > 0:
                self.dropped_unstored += overflow
                pending = pending[overflow:]
            self.unstored = pending
            # First failure and every 60th: a full disk must not also flood the journal.
            if self.store_failures == 1 or self.store_failures % 60 == 0:
                event(self.log, logging.ERROR, "could not store samples; keeping them in memory",
                      error=str(exc), error_type=type(exc).__name__, held=len(pending),
                      dropped_total=self.dropped_unstored, failures=self.store_failures)
            return
        if self.unstored:
            event(self.log, logging.INFO, "storing again: held samples written", count=len(self.unstored),
                  failures=self.store_failures)
            self.store_failures = 0
        self.unstored = []


def collector_families(scheduled: Sequence[ScheduledMetric]) -> list[Family]:
    """Each scheduled collector's counters (the self-metrics collector aside)."""
    per = [m for m in scheduled if m.settings.name != "agent.self_metrics"]
    return [
        Family("collector.metrics_collected_total", "counter", "Samples produced, per collector.",
               [(make_labels(collector=m.settings.name), float(m.samples)) for m in per]),
        Family("collector.metrics_failed_total", "counter", "Collection runs that failed, per collector.",
               [(make_labels(collector=m.settings.name), float(m.failures)) for m in per]),
        Family("collector.collection_duration_seconds", "histogram", "Time one collection run took.",
               histograms=[(make_labels(collector=m.settings.name), m.duration) for m in per]),
    ]
