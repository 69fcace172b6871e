"""Start-up, the one place that starts the agent: signals first, then the lock, the
database check (quarantine and salvage), the database lock, then the agent's loops.

Signals come first because the checks before the loops can take minutes on a large or
damaged database: a stop asked for meanwhile ends the start-up cleanly, between steps,
with exit 0 (systemd's stop then sees a clean exit, not a kill mid-write).
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
import threading
from types import FrameType

from belabox_metrics import logs
from belabox_metrics.config import Settings
from belabox_metrics.store.lock import AlreadyRunning, ProcessLock
from belabox_metrics.store.migrations import SchemaError
from belabox_metrics.validation import ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _stopped(stop: threading.Event, step: str) -> bool:
    if stop.is_set():
        logs.event(logs.get("agent"), logging.INFO, "stop requested during start-up: exiting cleanly", after=step)
        return True
    return False


def run(settings: Settings, stop_after: float | None = None, stop: threading.Event | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT (or ``stop_after`` seconds, or ``stop`` is set)."""
    stop = stop or threading.Event()
    install_signal_handlers(stop)
    timer = threading.Timer(stop_after, stop.set) if stop_after else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        return _start(settings, stop)
    finally:
        if timer is not None:
            timer.cancel()


def _start(settings: Settings, stop: threading.Event) -> int:
    from belabox_metrics.agent import Agent
    from belabox_metrics.priority import classifier
    from belabox_metrics.runtime.preflight import check_before_start
    from belabox_metrics.secrets import register_configured_secrets
    from belabox_metrics.store.queue import SampleQueue, SeriesLanes
    from belabox_metrics.store.recovery import quarantine_if_corrupt, salvage

    # Before any loop starts: a secret a source reads only later (a belaUI password at its
    # login, a disabled source's files never) is masked from the first log line on.
    register_configured_secrets(settings)
    log = logs.setup(settings.logging.level, settings.logging.format)
    problem = check_before_start(settings)
    if problem is not None:
        print(f"metrics-collector: config error in {settings.source}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    lock = ProcessLock(settings.storage.path)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"metrics-collector: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"metrics-collector: cannot create lock file {lock.path}: {exc.strerror}; "
              "check storage.path and its permissions", file=sys.stderr)
        return EXIT_FAILURE
    try:
        try:
            def salvage_into(moved: str) -> tuple[int, int]:
                fresh = SampleQueue.open(settings.storage.path,
                                         lanes=SeriesLanes(classifier(settings.remote.priority)))
                try:
                    return salvage(moved, fresh)
                finally:
                    fresh.close()

            if _stopped(stop, "lock"):
                return EXIT_OK
            # A corrupt file would fail every start (a crash loop): move it aside, start fresh.
            quarantine_if_corrupt(settings.storage.path, logs.get("storage"), salvage_into=salvage_into)
            if _stopped(stop, "integrity check"):
                return EXIT_OK
            SampleQueue.open(settings.storage.path).close()
            lock.hold_database()  # created now (or replaced by a fresh one): lock that file too
        except AlreadyRunning as exc:
            print(f"metrics-collector: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        except (SchemaError, sqlite3.Error, OSError) as exc:
            print(f"metrics-collector: cannot open database {settings.storage.path}: {exc}",
                  file=sys.stderr)
            return EXIT_FAILURE
        if _stopped(stop, "database open"):
            return EXIT_OK
        try:
            agent = Agent(settings, stop=stop)
        except ConfigError as exc:
            print(f"metrics-collector: config error in {settings.source}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        code = agent.run()
        for handler in log.handlers:
            handler.flush()
        return code
    finally:
        lock.release()
