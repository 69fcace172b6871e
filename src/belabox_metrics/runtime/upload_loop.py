"""The upload loop: every ``remote.interval`` one upload cycle, then priority-class moves,
housekeeping, the clock-skew check and the queue figures; at shutdown, once collection
has stopped, one last cycle within ``remote.shutdown_grace``.

It runs on its own thread with its own queue, the one writer of upload progress."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from belabox_metrics.clock import Clock
from belabox_metrics.config import Settings
from belabox_metrics.logs import event, get, redact_url
from belabox_metrics.runtime.gc_freeze import GcFreezer
from belabox_metrics.runtime.housekeeping import Housekeeping
from belabox_metrics.runtime.queue_figures import QueueFigures
from belabox_metrics.runtime.upload_record import UploadRecord
from belabox_metrics.sdnotify import Heartbeat
from belabox_metrics.selfmetrics import SelfMetrics
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.timesync import SkewMeasurement, measure_skew
from belabox_metrics.upload.bandwidth import TokenBucket
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import Transport
from belabox_metrics.upload.uploader import Uploader, UploadPolicy


def upload_policy(settings: Settings) -> UploadPolicy:
    remote = settings.remote
    return UploadPolicy(
        max_samples=remote.batch_size, max_bytes=remote.max_request_bytes,
        max_attempts=remote.retry.max_attempts, backoff_base=remote.retry.backoff_base,
        backoff_max=remote.retry.backoff_max, jitter=remote.retry.jitter,
        max_age_ms=int(remote.max_sample_age * 1000), max_future_ms=int(remote.max_future * 1000),
        newest_first=remote.newest_first,
    )


@dataclass
class UploadLoop:
    settings: Settings
    clock: Clock
    transport: Transport
    headers: dict[str, str]
    stop: threading.Event
    heartbeat: Heartbeat
    budget: TokenBucket | None
    lanes: Callable[[], tuple[int, ...]]    # the priority classes served now
    figures: QueueFigures
    self_metrics: SelfMetrics
    collection_done: threading.Event
    open_queue: Callable[[], SampleQueue]   # this loop's own connection (owns upload progress)
    log: logging.Logger = field(default_factory=lambda: get("agent"))
    uploader: Uploader | None = None
    housekeeping: Housekeeping | None = None
    skew: SkewMeasurement | None = None
    classes_waiting: int = 0
    storage_failures: int = 0
    next_skew_check: float = 0.0

    @property
    def destination(self) -> str:
        return redact_url(self.settings.remote.url)

    def run(self) -> None:
        """The thread's body; returns at shutdown, raises what it cannot survive."""
        remote = self.settings.remote
        queue = self.open_queue()
        try:
            self.uploader = Uploader(queue, self.transport, url=remote.url,
                                     fmt=wire_format(remote.format, self.settings.device.id, remote.compression_level),
                                     clock=self.clock, log=get("upload"), policy=upload_policy(self.settings),
                                     headers=self.headers, stop=self.stop, heartbeat=self.heartbeat,
                                     timeout=remote.timeout, budget=self.budget, lanes=self.lanes)
            self.self_metrics.add(self.uploader.families)
            destinations = [self.destination] if remote.enabled else []
            self._apply_classes(queue, destinations)
            self.housekeeping = Housekeeping(queue, self.settings, destinations, self.clock, get("storage"))
            self.self_metrics.add(self.housekeeping.families)
            self.figures.refresh(queue, force=True)
            record = UploadRecord(self.settings.storage.path)  # the last error, for `status` when stopped
            freezer = GcFreezer(self.clock)  # long-lived objects out of full collections
            while True:
                self.heartbeat.beat(remote.interval + 10)
                if self.clock.wait(remote.interval, self.stop):
                    break
                if remote.enabled:
                    self._storage_guard("upload", self.uploader.run_cycle)
                    record.note(self.uploader.last_error, int(self.clock.wall() * 1000))
                    # No append may come to carry the progress (the stream ended): commit it.
                    self._storage_guard("progress", queue.save_progress_if_overdue)
                self.heartbeat.beat(120)
                if self.classes_waiting:
                    self._apply_classes(queue, destinations)
                self._storage_guard("housekeeping", self.housekeeping.run)
                self.check_skew()
                self.figures.refresh(queue)
                freezer.run()
            # Shutdown: wait for the last collection to be stored, then one last upload.
            self.collection_done.wait(timeout=remote.shutdown_grace)
            if remote.enabled:
                deadline = self.clock.monotonic() + remote.shutdown_grace
                result = self.uploader.run_cycle(deadline=deadline)
                record.note(self.uploader.last_error, int(self.clock.wall() * 1000))
                event(self.log, logging.INFO, "final upload", acknowledged=result.acknowledged,
                      pending=queue.pending_count(self.destination), error=result.error)
            housekeeping = self.housekeeping
            self._storage_guard("housekeeping", lambda: housekeeping.run(final=True))
        finally:
            self.transport.close()
            queue.close()

    def left_backlog(self) -> int:
        """Samples that left the backlog since start: acknowledged or dead-lettered, dropped
        by the size cap, coalesced."""
        up, house = self.uploader, self.housekeeping
        return ((up.resolved_total if up else 0)
                + (house.dropped_unsent_total + house.coalesced_total if house else 0))

    def _apply_classes(self, queue: SampleQueue, destinations: Sequence[str]) -> None:
        """Series whose priority class the config changed move lanes when that is safe."""
        try:
            moved, waiting = queue.apply_classes(destinations)
        except sqlite3.OperationalError as exc:
            event(self.log, logging.WARNING, "could not apply priority classes; retrying next cycle", error=str(exc))
            self.classes_waiting = max(self.classes_waiting, 1)
            return
        if moved:
            event(self.log, logging.INFO, "priority classes changed by the config applied", series=moved)
        if waiting and not self.classes_waiting:
            event(self.log, logging.INFO, "priority classes changed by the config: applied once the backlog is sent",
                  series=waiting)
        self.classes_waiting = waiting

    def _storage_guard(self, step: str, work: Callable[[], object]) -> None:
        """A full disk or an I/O error fails this step, not the agent: rows stay pending
        (a request VM accepted but we could not mark is sent again, and deduplicated)."""
        try:
            work()
        except sqlite3.OperationalError as exc:
            self.storage_failures += 1
            if self.storage_failures == 1 or self.storage_failures % 60 == 0:
                event(self.log, logging.ERROR, "database write failed; retrying next cycle", step=step,
                      error=str(exc), failures=self.storage_failures)

    def check_skew(self) -> None:
        """Compare the clock with monitoring.clock_skew_url's Date header, when it is due."""
        monitoring = self.settings.monitoring
        if monitoring.clock_skew_url is None or self.clock.monotonic() < self.next_skew_check:
            return
        self.next_skew_check = self.clock.monotonic() + monitoring.clock_skew_check_interval
        try:
            measured = measure_skew(monitoring.clock_skew_url, self.settings.remote.timeout)
        except OSError as exc:
            event(self.log, logging.WARNING, "clock skew check failed", clock_skew_url=redact_url(
                monitoring.clock_skew_url), error=str(exc), error_type=type(exc).__name__)
            return
        if measured is None:
            event(self.log, logging.WARNING, "clock skew check: no usable Date header",
                  clock_skew_url=redact_url(monitoring.clock_skew_url))
            return
        self.skew = measured
        level = logging.WARNING if abs(measured.skew_ms) > monitoring.clock_skew_warn_threshold_ms else logging.INFO
        event(self.log, level, "clock skew", skew_ms=round(measured.skew_ms), rtt_ms=round(measured.rtt_ms),
              clock_skew_url=redact_url(monitoring.clock_skew_url), ingest_url=self.destination)
