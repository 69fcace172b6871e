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
import os
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
from belabox_metrics.secrets import read_secret_file
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import HttpTransport, Transport
from belabox_metrics.upload.uploader import Uploader, UploadPolicy

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


def upload_policy(settings: Settings) -> UploadPolicy:
    remote = settings.remote
    return UploadPolicy(
        max_samples=remote.batch_size, max_bytes=remote.max_request_bytes,
        max_attempts=remote.retry.max_attempts, backoff_base=remote.retry.backoff_base,
        backoff_max=remote.retry.backoff_max, jitter=remote.retry.jitter,
        max_age_ms=int(remote.max_sample_age * 1000), max_future_ms=int(remote.max_future * 1000),
        newest_first=remote.newest_first,
    )


def read_boot_id(fs: FsRoot) -> str:
    try:
        return fs.read_proc("sys", "kernel", "random", "boot_id").strip()
    except OSError:
        return "unknown"


@dataclass
class Housekeeping:
    """Retention, the disk cap and WAL checkpoints, run from the upload thread between
    cycles (also when the uplink is down, so an offline box never fills its disk)."""

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
            dropped = self.queue.enforce_max_size(storage.max_size, self.destinations)
            if dropped:
                self.dropped_unsent_total += dropped
                event(self.log, logging.WARNING, "storage.max_size reached: dropped the oldest unsent samples",
                      dropped=dropped, dropped_total=self.dropped_unsent_total, max_size=storage.max_size)
        wal_path = storage.path + "-wal"
        wal_bytes = os.path.getsize(wal_path) if os.path.exists(wal_path) else 0
        if final or now >= self.next_checkpoint or wal_bytes > storage.wal_checkpoint_size:
            self.next_checkpoint = now + storage.wal_checkpoint_interval
            self.checkpoint(wal_bytes)

    def checkpoint(self, wal_bytes: int) -> None:
        started = time.perf_counter()
        busy = self.queue.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        wal_path = self.settings.storage.path + "-wal"
        after = os.path.getsize(wal_path) if os.path.exists(wal_path) else 0
        self.checkpoints += 1
        event(self.log, logging.INFO, "wal checkpoint", duration_ms=round((time.perf_counter() - started) * 1000, 1),
              bytes_reclaimed=max(0, wal_bytes - after), wal_bytes=after, busy=bool(busy))


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
        remote = settings.remote
        self.headers: dict[str, str] = {}
        if remote.token_file:
            token = read_secret_file(remote.token_file, "remote.token_file")
            self.headers["Authorization"] = f"Bearer {token}"
        self.fs = FsRoot(settings.host.proc_root, settings.host.sys_root)
        self.ctx = CollectorContext(fs=self.fs, clock=self.clock, device_id=settings.device.id,
                                    log=get("collector"))
        start = self.clock.monotonic()
        self.scheduled = [
            ScheduledMetric(m, c, due=start) for m, c in build_collectors(settings, self.ctx)
        ]
        self.collection: CollectionLoop | None = None
        self.uploader: Uploader | None = None
        self.housekeeping: Housekeeping | None = None
        self.session_id: int | None = None

    def _open_queue(self) -> SampleQueue:
        return SampleQueue.open(self.settings.storage.path)

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
                                     fmt=wire_format(remote.format, self.settings.device.id),
                                     clock=self.clock, log=get("upload"), policy=upload_policy(self.settings),
                                     headers=self.headers, stop=self.stop)
            destinations = [self.uploader.destination] if remote.enabled else []
            self.housekeeping = Housekeeping(queue, self.settings, destinations, self.clock, get("storage"))
            while True:
                if self.clock.wait(remote.interval, self.stop):
                    break
                if remote.enabled:
                    self.uploader.run_cycle()
                self.housekeeping.run()
            # Shutdown: wait for the last collection to be stored, then one last upload.
            self.collection_done.wait(timeout=remote.shutdown_grace)
            if remote.enabled:
                deadline = self.clock.monotonic() + remote.shutdown_grace
                result = self.uploader.run_cycle(deadline=deadline)
                event(self.log, logging.INFO, "final upload", acknowledged=result.acknowledged,
                      pending=queue.pending_count(self.uploader.destination), error=result.error)
            self.housekeeping.run(final=True)
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
        queue = self._open_queue()
        try:
            self.session_id = queue.start_session(read_boot_id(self.fs), int(self.clock.wall() * 1000),
                                                  self.clock.monotonic())
        finally:
            queue.close()
        event(self.log, logging.INFO, "starting", device_id=self.settings.device.id,
              db=self.settings.storage.path, session_id=self.session_id,
              metrics=",".join(f"{m.settings.name}@{m.settings.interval:g}s" for m in self.scheduled),
              remote=f"{redact_url(remote.url)} ({remote.format})" if remote.enabled else "disabled")
        threads = [
            threading.Thread(target=self._collection_thread, name="collect", daemon=True),
            threading.Thread(target=self._upload_thread, name="upload", daemon=True),
        ]
        for thread in threads:
            thread.start()
        while not self.stop.wait(0.5):
            pass
        for thread in threads:
            thread.join(timeout=2 * remote.shutdown_grace + remote.timeout + 5)
        for metric in self.scheduled:
            close = getattr(metric.collector, "close", None)
            if callable(close):
                close()
        event(self.log, logging.INFO, "stopped", errors=len(self.errors))
        return 1 if self.errors else 0
