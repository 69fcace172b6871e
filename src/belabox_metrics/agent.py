"""Wiring: collectors on their schedules -> queue; uploader on its interval; clean shutdown.

Two threads, each with its own SQLite connection (WAL lets them work side by side):
- collection: runs every due collector, stores their samples in one transaction;
- upload: sends pending samples every ``remote.interval``, and once more at shutdown,
  after collection has stopped, within ``remote.shutdown_grace``.
The main thread only waits for a stop request (SIGTERM/SIGINT) and joins them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from belabox_metrics.clock import Clock, SystemClock
from belabox_metrics.collectors.base import Collector, CollectorContext, MetricSettings, registry
from belabox_metrics.collectors.procfs import FsRoot
from belabox_metrics.config import Settings
from belabox_metrics.logs import event, get, redact_url
from belabox_metrics.model import Sample
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.transport import HttpTransport, Transport
from belabox_metrics.upload.uploader import Uploader

# Samples that could not be stored (disk full, database locked) are kept in memory and
# retried, up to this many; beyond it the oldest are dropped and counted.
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


@dataclass
class CollectionLoop:
    metrics: Sequence[ScheduledMetric]
    store: Callable[[list[Sample]], int]
    clock: Clock
    log: logging.Logger
    unstored: list[Sample] = field(default_factory=list)
    dropped_unstored: int = 0
    store_failures: int = 0

    def run(self, stop: threading.Event, max_rounds: int | None = None) -> None:
        rounds = 0
        while not stop.is_set():
            if max_rounds is not None and rounds >= max_rounds:
                return
            now = self.clock.monotonic()
            due = [m for m in self.metrics if m.due <= now]
            if not due:
                wake = min(m.due for m in self.metrics)
                if self.clock.wait(wake - now, stop):
                    return
                continue
            rounds += 1
            self.run_due(due)

    def run_due(self, due: Sequence[ScheduledMetric]) -> None:
        now_ms = int(self.clock.wall() * 1000)
        batch: list[Sample] = []
        for metric in due:
            batch.extend(self._collect_one(metric, now_ms))
            metric.due = next_due(metric.due, metric.settings.interval, self.clock.monotonic())
        self._store(batch)

    def _collect_one(self, metric: ScheduledMetric, now_ms: int) -> list[Sample]:
        started = time.perf_counter()
        metric.runs += 1
        try:
            samples = metric.collector.collect(now_ms)
        except Exception as exc:  # a failing collector must never stop the others
            metric.failures += 1
            metric.last_error = f"{type(exc).__name__}: {exc}"
            # Log the first failure and then every 60th, so a missing sensor does not
            # flood the journal once a second.
            if metric.failures == 1 or metric.failures % 60 == 0:
                event(self.log, logging.WARNING, "collector failed", collector=metric.settings.name,
                      error=str(exc), error_type=type(exc).__name__, failures=metric.failures)
            return []
        finally:
            metric.last_duration_s = time.perf_counter() - started
        metric.last_error = None
        metric.samples += len(samples)
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
            event(self.log, logging.ERROR, "could not store samples; keeping them in memory",
                  error=str(exc), error_type=type(exc).__name__, held=len(pending),
                  dropped_total=self.dropped_unstored)
            return
        self.unstored = []


def build_collectors(settings: Settings, ctx: CollectorContext) -> list[tuple[MetricSettings, Collector]]:
    specs = registry()
    return [(m, specs[m.name].factory(m, ctx)) for m in settings.enabled_metrics]


class Agent:
    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 transport: Transport | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.transport = transport or HttpTransport(timeout=settings.remote.timeout)
        self.log = get("agent")
        self.stop = threading.Event()
        self.collection_done = threading.Event()
        self.errors: list[BaseException] = []
        fs = FsRoot(settings.host.proc_root, settings.host.sys_root)
        self.ctx = CollectorContext(fs=fs, clock=self.clock, device_id=settings.device.id,
                                    log=get("collector"))
        start = self.clock.monotonic()
        self.scheduled = [
            ScheduledMetric(m, c, due=start) for m, c in build_collectors(settings, self.ctx)
        ]
        self.collection: CollectionLoop | None = None
        self.uploader: Uploader | None = None

    def _open_queue(self) -> SampleQueue:
        return SampleQueue.open(self.settings.storage.path, self.settings.device.id)

    def _collection_thread(self) -> None:
        queue = self._open_queue()
        try:
            self.collection = CollectionLoop(self.scheduled, queue.append, self.clock, get("collect"))
            self.collection.run(self.stop)
        except BaseException as exc:
            self.errors.append(exc)
            self.log.exception("collection loop crashed")
            self.stop.set()
        finally:
            self.collection_done.set()
            queue.close()

    def _upload_thread(self) -> None:
        remote = self.settings.remote
        queue = self._open_queue()
        try:
            self.uploader = Uploader(queue, self.transport, url=remote.url,
                                     device_id=self.settings.device.id, batch_size=remote.batch_size,
                                     clock=self.clock, log=get("upload"))
            while True:
                if self.clock.wait(remote.interval, self.stop):
                    break
                self.uploader.run_cycle()
            # Shutdown: wait for the last collection to be stored, then one last upload.
            self.collection_done.wait(timeout=remote.shutdown_grace)
            deadline = self.clock.monotonic() + remote.shutdown_grace
            result = self.uploader.run_cycle(deadline=deadline)
            left = queue.pending_count(self.uploader.destination)
            event(self.log, logging.INFO, "final upload", acknowledged=result.acknowledged,
                  pending=left, error=result.error)
        except BaseException as exc:
            self.errors.append(exc)
            self.log.exception("upload loop crashed")
            self.stop.set()
        finally:
            self.transport.close()
            queue.close()

    def run(self) -> int:
        """Run until ``self.stop`` is set. Returns the process exit code."""
        remote = self.settings.remote
        event(self.log, logging.INFO, "starting", device_id=self.settings.device.id,
              db=self.settings.storage.path,
              metrics=",".join(f"{m.settings.name}@{m.settings.interval:g}s" for m in self.scheduled),
              remote=redact_url(remote.url) if remote.enabled else "disabled")
        threads = [threading.Thread(target=self._collection_thread, name="collect", daemon=True)]
        if remote.enabled:
            threads.append(threading.Thread(target=self._upload_thread, name="upload", daemon=True))
        for thread in threads:
            thread.start()
        while not self.stop.wait(0.5):
            pass
        for thread in threads:
            thread.join(timeout=remote.shutdown_grace + remote.timeout + 5)
        for _, collector in [(m.settings, m.collector) for m in self.scheduled]:
            close = getattr(collector, "close", None)
            if callable(close):
                close()
        event(self.log, logging.INFO, "stopped", errors=len(self.errors))
        return 1 if self.errors else 0
