"""Wiring: collectors on their schedules -> queue; uploader on its interval; clean shutdown.

Two threads, each with its own SQLite connection (WAL lets them work side by side):
- collection: runs every due collector, stores their samples in one transaction;
- upload: sends pending samples every ``remote.interval``, and once more at shutdown,
  after collection has stopped, within ``remote.shutdown_grace``.
The main thread only waits for a stop request (SIGTERM/SIGINT) and joins them.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading

from belabox_metrics import __version__
from belabox_metrics.clock import Clock, SystemClock
from belabox_metrics.collectors.base import Collector, CollectorContext, MetricSettings, registry
from belabox_metrics.collectors.procfs import FsRoot
from belabox_metrics.collectors.srt import SrtCollector
from belabox_metrics.config import Settings, parse_listen
from belabox_metrics.health.server import HealthServer, listen_problem
from belabox_metrics.health.status import CollectorState, Snapshot, Thresholds, evaluate
from belabox_metrics.liveness import StreamLiveness
from belabox_metrics.logs import event, get, redact_url
from belabox_metrics.priority import CLASS_NAMES, classifier
from belabox_metrics.runtime.backlog import LiveBacklog
from belabox_metrics.runtime.clock_gate import ClockGate
from belabox_metrics.runtime.collection import CollectionLoop, ScheduledMetric, collector_families
from belabox_metrics.runtime.housekeeping import Housekeeping
from belabox_metrics.runtime.queue_figures import QueueFigures
from belabox_metrics.runtime.upload_loop import UploadLoop
from belabox_metrics.sdnotify import Heartbeat, notify, watchdog_period
from belabox_metrics.secrets import read_secret_file
from belabox_metrics.selfmetrics import Family, SelfMetrics, SelfMetricsCollector, written_bytes
from belabox_metrics.store.queue import SampleQueue, SeriesLanes, UploadProgress
from belabox_metrics.store.recovery import is_corruption, mark_suspect
from belabox_metrics.store.views import QueueStats
from belabox_metrics.timesync import ClockTrust, SampleStamps, SkewMeasurement
from belabox_metrics.upload.bandwidth import TokenBucket
from belabox_metrics.upload.transport import HttpTransport, Transport
from belabox_metrics.upload.uploader import Uploader

# agent.health_status values, for alert rules.
HEALTH_CODES = {"ok": 0, "degraded": 1, "error": 2}
# How often a health endpoint that could not bind tries again.
HEALTH_RETRY_S = 10.0

def _source_status(collector: Collector) -> list[dict[str, object]] | None:
    """Per-source health of a collector with several sources (SRT), None for the others."""
    status = getattr(collector, "source_status", None)
    return status() if callable(status) else None


def build_collectors(settings: Settings, ctx: CollectorContext) -> list[tuple[MetricSettings, Collector]]:
    specs = registry()
    return [(m, specs[m.name].factory(m, ctx)) for m in settings.enabled_metrics]


def read_boot_id(fs: FsRoot) -> str:
    try:
        return fs.read_proc("sys", "kernel", "random", "boot_id").strip()
    except OSError:
        return "unknown"


class Agent:
    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 transport: Transport | None = None, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        if transport is None:
            remote = settings.remote
            transport = HttpTransport(timeout=remote.timeout, tls=remote.tls, proxy=remote.proxy)
            if remote.enabled and remote.url.startswith("https:"):
                transport.client.ssl_context()  # a bad CA, certificate or key: a ConfigError now
        self.transport = transport
        self.log = get("agent")
        self.stop = stop or threading.Event()
        self.collection_done = threading.Event()
        self.errors: list[BaseException] = []
        remote = settings.remote
        self.headers: dict[str, str] = {}
        if remote.token_file:
            token = read_secret_file(remote.token_file, "remote.token_file")
            self.headers["Authorization"] = f"Bearer {token}"
        self.fs = FsRoot(settings.host.proc_root, settings.host.sys_root)
        self.boot_id = read_boot_id(self.fs)
        self.ctx = CollectorContext(fs=self.fs, clock=self.clock, device_id=settings.device.id,
                                    log=get("collector"))
        self.started_wall = self.clock.wall()
        start = self.clock.monotonic()
        self.scheduled = [
            ScheduledMetric(m, c, due=start) for m, c in build_collectors(settings, self.ctx)
        ]
        self.self_metrics = SelfMetrics()
        if settings.monitoring.self_metrics:
            self.scheduled.append(ScheduledMetric(
                MetricSettings("agent.self_metrics", settings.monitoring.self_metrics_interval),
                SelfMetricsCollector(self.self_metrics), due=start + settings.monitoring.self_metrics_interval))
        self.collection_heartbeat = Heartbeat("collection", self.clock)
        # How long one round of collectors may take before the loop counts as hung.
        self.collect_run_budget = 60.0
        self.upload_heartbeat = Heartbeat("upload", self.clock)
        self.destination = redact_url(remote.url)
        # Known from the SRT/BELABOX collectors: a stream is up and sending. Until each of
        # them has answered once after start, it is unknown and treated as live.
        self.liveness = StreamLiveness(
            self.clock, hold=remote.bandwidth.live_hold,
            awaited=[m.settings.name for m in self.scheduled
                     if isinstance(m.collector, SrtCollector) and m.collector.only is None],
            settle=remote.bandwidth.live_settle)
        self.budget: TokenBucket | None = None
        if remote.bandwidth.max_bytes_per_second > 0:
            self.budget = TokenBucket(self.clock, remote.bandwidth, live=self.stream_live)
        self.backlog = LiveBacklog(settings.storage.path)
        self.clock_gate = ClockGate(self.clock, self.boot_id, get("agent"), self.backlog, on_corruption=self._corrupt)
        self.figures = QueueFigures(self.clock, self.destination, self.backlog, settings.storage.max_size,
                                    left_backlog=lambda: self.upload_loop.left_backlog())
        # Each owner exposes its own families; the uploader and housekeeping add theirs
        # when the upload thread makes them.
        for source in (lambda: collector_families(self.scheduled), self.figures.families,
                       self.clock_gate.families, self.liveness.families,
                       *((self.budget.families,) if self.budget is not None else ()), self._agent_families):
            self.self_metrics.add(source)
        # Shared by the threads' queues: which priority lane (class) each series is in.
        self.series_lanes = SeriesLanes(classifier(remote.priority))
        # Acknowledged upload progress, committed with the next round's samples (flash).
        self.upload_progress = UploadProgress()
        self.stamps = SampleStamps(self.clock, get("time"), max_catch_up_s=remote.max_future)
        self.self_metrics.add(self.stamps.families)
        self.collection: CollectionLoop | None = None
        self.upload_loop = UploadLoop(
            settings, self.clock, self.transport, self.headers, self.stop, self.upload_heartbeat, self.budget,
            self.upload_lanes, self.figures, self.self_metrics, self.collection_done,
            open_queue=lambda: self._open_queue(owns_upload_state=True), next_skew_check=start)
        self.session_id: int | None = None
        self.watchdog_stalls = 0
        self.health_server: HealthServer | None = None
        self.health_listen_error: str | None = None
        self.next_health_bind = 0.0
        self.limits = Thresholds(pending_degraded=settings.health.degraded_threshold,
                                 pending_error=settings.health.error_threshold,
                                 upload_error_after=settings.health.upload_error_after,
                                 skew_warn_ms=settings.monitoring.clock_skew_warn_threshold_ms)

    def _open_queue(self, *, owns_upload_state: bool = False) -> SampleQueue:
        return SampleQueue.open(self.settings.storage.path, lanes=self.series_lanes,
                                owns_upload_state=owns_upload_state, progress=self.upload_progress)

    def upload_lanes(self) -> tuple[int, ...]:
        """The priority classes the uploader serves now, P0 first: fewer while live."""
        return self.settings.remote.priority.lanes(self.stream_live())

    # -- collection --------------------------------------------------------------------
    def stream_live(self) -> bool:
        """The live budget and lanes apply: a stream is live, or not known yet."""
        return self.liveness.live()

    def _corrupt(self, exc: BaseException) -> None:
        if not self.stop.is_set():
            # Holding samples in memory would not help: stop, and let the restart check.
            self.errors.append(exc)
            self.stop.set()

    def _collection_thread(self) -> None:
        queue = self._open_queue()
        try:
            self.collection = CollectionLoop(self.scheduled, lambda samples: self.clock_gate.store(queue, samples),
                                             self.clock,
                                             get("collect"), heartbeat=self.collection_heartbeat,
                                             run_budget=self.collect_run_budget, observe=self.liveness.observe,
                                             stamp=self.stamps.now_ms)
            self.collection.run(self.stop)
        except BaseException as exc:
            self.errors.append(exc)
            self.log.exception("collection loop crashed")
            self.stop.set()
        finally:
            self.collection_done.set()
            queue.close()

    # -- upload and maintenance ----------------------------------------------------------
    def _upload_thread(self) -> None:
        try:
            self.upload_loop.run()
        except BaseException as exc:
            self.errors.append(exc)
            self.log.exception("upload loop crashed")
            self.stop.set()

    @property
    def uploader(self) -> Uploader | None:
        return self.upload_loop.uploader

    @property
    def housekeeping(self) -> Housekeeping | None:
        return self.upload_loop.housekeeping

    @property
    def skew(self) -> SkewMeasurement | None:
        return self.upload_loop.skew

    def current_stats(self) -> QueueStats | None:
        """Queue figures as of now, also while an upload cycle is blocked (runtime/backlog.py)."""
        return self.figures.current()

    # -- health and self-metrics -----------------------------------------------------------
    def snapshot(self) -> Snapshot:
        stats = self.current_stats()
        up = self.uploader
        collectors = [
            CollectorState(m.settings.name, m.runs, m.failures, m.last_error,
                           degraded=bool(getattr(m.collector, "degraded", False)),
                           last_success_wall=m.last_success_wall,
                           sources=_source_status(m.collector))
            for m in self.scheduled
        ]
        gate = self.clock_gate
        return Snapshot(
            now_wall=self.clock.wall(), started_wall=self.started_wall, collectors=collectors,
            upload_enabled=self.settings.remote.enabled, upload_interval=self.settings.remote.interval,
            destination=self.destination, last_upload_wall=up.last_success_wall if up else None,
            last_upload_error=up.last_error if up else None,
            upload_refused=up.refusing if up else None,
            upload_in_flight_s=up.in_flight_seconds() if up else None, upload_timeout=self.settings.remote.timeout,
            pending=stats.pending if stats else 0, oldest_pending_ms=stats.oldest_pending_ms if stats else None,
            dead_letters=stats.dead_letters if stats else 0, db_bytes=stats.db_bytes if stats else 0,
            wal_bytes=stats.wal_bytes if stats else 0,
            dropped_unsent=self.housekeeping.dropped_unsent_total if self.housekeeping else 0,
            held_samples=gate.held_total, clock_trusted=gate.trusted(),
            unstored=len(self.collection.unstored) if self.collection is not None else 0,
            clock_reason=gate.reason,
            skew_ms=self.skew.skew_ms if self.skew else None,
            skew_url=redact_url(self.settings.monitoring.clock_skew_url) if self.settings.monitoring.clock_skew_url
            else None,
            extra={"device_id": self.settings.device.id, "session_id": self.session_id, "version": __version__,
                   "bandwidth": self._bandwidth_state(),
                   "pending_by_class": stats.pending_by_class if stats else {},
                   "classes_served": [CLASS_NAMES[lane] for lane in self.upload_lanes()],
                   "written_bytes": written_bytes()},
        )

    def _bandwidth_state(self) -> dict[str, object]:
        budget = self.budget
        return {"stream_live": self.stream_live(), "stream": self.liveness.state(),
                "limit_bytes_per_second": budget.rate() if budget else None,
                "waited_seconds": round(budget.waited_seconds, 1) if budget else 0.0,
                "bytes_sent": self.uploader.bytes_sent_total if self.uploader else 0}

    def health(self) -> dict[str, object]:
        return evaluate(self.snapshot(), self.limits)

    def alive(self) -> bool:
        return self.collection_heartbeat.alive() and self.upload_heartbeat.alive()

    def _agent_families(self) -> list[Family]:
        """The agent's own: what fleet alert rules need (deploy/alerts/) beyond each part's."""
        families = [
            Family("agent.starts_total", "counter", "Agent starts recorded in this database (the session counter).",
                   [((), float(self.session_id))] if self.session_id is not None else []),
            Family("agent.health_status", "gauge", "/health status: 0 ok, 1 degraded, 2 error.",
                   [((), float(HEALTH_CODES.get(str(self.health().get("status")), 2)))]),
            Family("agent.watchdog_stalls_total", "counter",
                   "Watchdog pings withheld because a loop stalled (systemd restarts the agent).",
                   [((), float(self.watchdog_stalls))]),
        ]
        written = written_bytes()
        if written is not None:
            families.append(Family("agent.written_bytes_total", "counter",
                                   "Bytes the agent made the kernel write to storage (/proc/self/io write_bytes): "
                                   "its flash wear.", [((), float(written))]))
        if self.skew is not None:
            families.append(Family("time.skew_ms", "gauge",
                                   "Reference clock minus local clock, in milliseconds.", [((), self.skew.skew_ms)]))
        return families

    # -- life ------------------------------------------------------------------------------
    def _start_health(self) -> bool:
        """Bind the health endpoint. A busy port or an address not on this machine must not
        stop collection and upload (they are the agent's job): warn, naming the key and the
        fix, and retry from the main loop every HEALTH_RETRY_S."""
        listen = self.settings.health.listen
        if not listen:
            return False
        host, port = parse_listen(listen)
        try:
            self.health_server = HealthServer(host, port, document=self.health, live=self.alive,
                                              metrics=self.self_metrics.exposition, log=get("health"))
        except OSError as exc:
            first = self.health_listen_error is None
            self.health_listen_error = listen_problem(listen, exc)
            self.next_health_bind = self.clock.monotonic() + HEALTH_RETRY_S
            if first:
                event(self.log, logging.WARNING, "health endpoint not listening; collecting and uploading "
                      f"anyway, retrying every {HEALTH_RETRY_S:g} s", key="health.listen",
                      error=self.health_listen_error,
                      fix="set health.listen to a free HOST:PORT on this machine (e.g. 127.0.0.1:9470), or off")
            return False
        self.health_server.start()
        if self.health_listen_error is not None:
            event(self.log, logging.INFO, "health endpoint listening now", listen=listen)
        self.health_listen_error = None
        return True

    def _health_url(self) -> str:
        if not self.settings.health.listen:
            return "off"
        if self.health_listen_error is not None:
            return f"not listening ({self.health_listen_error})"
        return f"http://{self.settings.health.listen}/health"

    def _main_wait(self, watchdog: float | None) -> float:
        wait = watchdog or 5.0
        if self.health_listen_error is not None:
            wait = min(wait, max(0.05, self.next_health_bind - self.clock.monotonic()))
        return wait

    def _notify_status(self) -> str:
        if self.health_listen_error is not None:
            return f"STATUS=collecting; health endpoint not listening: {self.health_listen_error}"
        return "STATUS=collecting"

    def run(self) -> int:
        """Run until ``self.stop`` is set. Returns the process exit code."""
        remote = self.settings.remote
        queue = self._open_queue()
        try:
            if self.settings.monitoring.hold_untrusted_clock:
                self.clock_gate.trust = ClockTrust(self.clock, newest_stored_ms=queue.newest_ts())
            self.clock_gate.held_total = queue.held_count()
            self.session_id = queue.start_session(self.boot_id, int(self.clock.wall() * 1000), self.clock.monotonic())
        except sqlite3.OperationalError as exc:
            # A full disk at start must not become a crash loop: run, hold samples in memory,
            # and say so in health until space returns.
            event(self.log, logging.ERROR, "database not writable at start; continuing", error=str(exc))
        finally:
            queue.close()
        self._start_health()
        event(self.log, logging.INFO, "starting", device_id=self.settings.device.id,
              db=self.settings.storage.path, session_id=self.session_id, boot_id=self.boot_id,
              metrics=",".join(f"{m.settings.name}@{m.settings.interval:g}s" for m in self.scheduled),
              remote=f"{self.destination} ({remote.format})" if remote.enabled else "disabled",
              health=self._health_url())
        # Starting is not hung: each loop has its first round's budget to beat for itself
        # (on a loaded box the upload thread's set-up can take seconds before its first beat).
        self.collection_heartbeat.beat(self.collect_run_budget)
        self.upload_heartbeat.beat(120)
        threads = [
            threading.Thread(target=self._collection_thread, name="collect", daemon=True),
            threading.Thread(target=self._upload_thread, name="upload", daemon=True),
        ]
        for thread in threads:
            thread.start()
        notify("READY=1\n" + self._notify_status())
        period = watchdog_period()
        next_ping = self.clock.monotonic()
        # The main thread feeds the watchdog and retries a health port that was busy; a
        # signal sets `stop` and wakes it at once.
        while not self.stop.wait(self._main_wait(period)):
            if self.health_listen_error is not None and self.clock.monotonic() >= self.next_health_bind \
                    and self._start_health():
                notify(self._notify_status())
            if period is not None and self.clock.monotonic() >= next_ping:
                # Feed the watchdog only while both loops keep their promises.
                if self.alive():
                    notify("WATCHDOG=1")
                    next_ping = self.clock.monotonic() + period
                else:
                    stalled = [h.name for h in (self.collection_heartbeat, self.upload_heartbeat) if not h.alive()]
                    self.watchdog_stalls += 1
                    event(self.log, logging.ERROR, "loop stalled: not feeding the watchdog", loops=",".join(stalled))
                    next_ping = self.clock.monotonic() + period
        notify("STOPPING=1")
        for thread in threads:
            thread.join(timeout=2 * remote.shutdown_grace + remote.timeout + 5)
        for metric in self.scheduled:
            close = getattr(metric.collector, "close", None)
            if callable(close):
                close()
        if self.health_server is not None:
            self.health_server.stop()
        corrupt = next((e for e in self.errors if is_corruption(e)), None)
        if corrupt is not None:
            # Restarted by systemd, the next start checks the whole file before using it.
            with contextlib.suppress(OSError):
                mark_suspect(self.settings.storage.path, str(corrupt))
            event(self.log, logging.ERROR, "the database is corrupt: stopping; the next start checks it in full "
                  "and moves it aside if it is damaged", db=self.settings.storage.path, error=str(corrupt))
        event(self.log, logging.INFO, "stopped", errors=len(self.errors))
        return 1 if self.errors else 0
