"""Time you can trust: clock sync state, skew against a reference, re-stamping.

An encoder like a BELABOX often boots with its clock at 1970 (no RTC battery) or at the
last shutdown (fake-hwclock) until NTP syncs over the very uplink that may be down. Samples
stamped meanwhile are garbage to a time-series database. So:

- ``ClockTrust`` decides whether the wall clock can be used: the year must be plausible,
  the clock must not be behind the newest sample already stored, and where a time-sync
  daemon runs (``/run/systemd/timesync`` exists) it must have synced (kernel adjtimex
  status, or timesyncd's ``synchronized`` flag). The kernel's STA_UNSYNC bit alone is not
  enough: containers and boxes without NTP report it forever.
- While the clock is untrusted, samples are held with their boot id and monotonic time;
  once it is trusted again they are re-stamped from the monotonic clock (exact within one
  boot) before anyone uploads them.
- ``SampleStamps`` stamps samples with the wall clock but never back in time: after a
  step back (NTP correcting a clock that ran ahead) stamps go on from the last one at 90 %
  of the monotonic clock's speed until the wall clock catches up with them.
- ``measure_skew`` compares the clock with the ``Date`` header of a reference URL.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from belabox_metrics import httpclient
from belabox_metrics.clock import Clock
from belabox_metrics.logs import event
from belabox_metrics.selfmetrics import Family
from belabox_metrics.timefmt import parse_http_date

# No BELABOX image predates this; anything earlier is an unset clock.
PLAUSIBLE_FROM_MS = 1_704_067_200_000   # 2024-01-01T00:00:00Z
PLAUSIBLE_UNTIL_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
STA_UNSYNC = 0x40
TIMEX_SIZE = 208  # struct timex on LP64 (x86_64, aarch64)
TIMESYNC_DIR = "/run/systemd/timesync"


@dataclass(frozen=True)
class KernelClock:
    synced: bool
    maxerror_us: int


def read_adjtimex() -> KernelClock | None:
    """The kernel's NTP state via adjtimex(2) with modes=0 (read only). None if unavailable
    (macOS, a seccomp filter that forbids it)."""
    try:
        import ctypes  # here, not at import: only where a time-sync daemon runs
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        buffer = ctypes.create_string_buffer(TIMEX_SIZE)
        if libc.adjtimex(buffer) < 0:
            return None
    except (OSError, AttributeError):
        return None
    maxerror = struct.unpack_from("q", buffer, 24)[0]
    status = struct.unpack_from("i", buffer, 40)[0]
    # systemd's NTPSynchronized: the kernel is not flagged unsynchronised and maxerror < 16 s.
    return KernelClock(synced=not status & STA_UNSYNC and maxerror < 16_000_000, maxerror_us=maxerror)


def plausible(timestamp_ms: int) -> bool:
    return PLAUSIBLE_FROM_MS <= timestamp_ms < PLAUSIBLE_UNTIL_MS


class ClockTrust:
    """Whether samples may be stamped with the wall clock now. Cached for ``recheck``
    seconds of monotonic time: the adjtimex call is cheap but not free."""

    def __init__(self, clock: Clock, *, newest_stored_ms: int | None = None,
                 timesync_dir: str = TIMESYNC_DIR,
                 kernel: Callable[[], KernelClock | None] = read_adjtimex, recheck: float = 5.0) -> None:
        self.clock = clock
        self.newest_stored_ms = newest_stored_ms
        self.timesync_dir = timesync_dir
        self.kernel = kernel
        self.recheck = recheck
        self._checked_at: float | None = None
        self._trusted = True
        self.reason = "not checked yet"

    def trusted(self) -> bool:
        now = self.clock.monotonic()
        if self._checked_at is None or now - self._checked_at >= self.recheck:
            self._checked_at = now
            self._trusted, self.reason = self._evaluate()
        return self._trusted

    def invalidate(self) -> None:
        self._checked_at = None

    def _evaluate(self) -> tuple[bool, str]:
        wall_ms = int(self.clock.wall() * 1000)
        if not plausible(wall_ms):
            return False, f"wall clock {wall_ms} ms is not a plausible date (unset RTC?)"
        if self.newest_stored_ms is not None and wall_ms < self.newest_stored_ms - 60_000:
            return False, "wall clock is behind the newest stored sample (restored at last shutdown?)"
        if os.path.isdir(self.timesync_dir):
            if os.path.exists(os.path.join(self.timesync_dir, "synchronized")):
                return True, "synchronised (systemd-timesyncd)"
            # No flag: ask the kernel. Where adjtimex is not allowed (the unit's
            # ProtectClock=true) the daemon's missing flag is the answer.
            state = self.kernel()
            if state is None or not state.synced:
                return False, "time sync daemon present but the clock is not synchronised yet"
        return True, "plausible"


# While catching up after a step back, stamps advance at this fraction of real time: a
# counter's increase per second of stamps reads 1 / 0.9 = 11 % high meanwhile, and the wall
# clock gains 1 s on the stamps every 10 s (a 60 s step: 10 minutes; 1 h: 10 hours).
CATCH_UP_SPEED = 0.9


class SampleStamps:
    """Sample timestamps: the wall clock, but never at or behind the previous stamp.

    Stamped with the wall clock alone, a step back (NTP correcting a clock that ran ahead,
    a manual ``date``) puts new samples on timestamps already stored, or between them: the
    database keeps one sample per (series, timestamp) and drops the rest, and a counter
    read in time order appears to reset, which ``increase()`` turns into a spike the size
    of the counter. Instead, while the wall clock is behind the last stamp, each stamp is
    the last one plus CATCH_UP_SPEED times the monotonic time since it: per series the
    stamps stay strictly increasing and evenly spaced (10 % closer), the values stay in
    collection order, and when the wall clock has caught up it is used again. A step
    back further than ``max_catch_up_s`` (what the destination accepts ahead of its clock,
    ``remote.max_future``) is followed at once: the stamps before it were that far ahead.

    Called from the collection thread only; the figures are read by the self-metrics.
    """

    def __init__(self, clock: Clock, log: logging.Logger, *, max_catch_up_s: float) -> None:
        self.clock = clock
        self.log = log
        self.max_catch_up_ms = int(max_catch_up_s * 1000)
        self.steps_back = 0
        self.ahead_ms = 0  # the last stamp minus the wall clock then: > 0 while catching up
        self._last: tuple[int, int, float] | None = None  # (stamp ms, wall ms, monotonic s)

    def families(self) -> list[Family]:
        return [
            Family("time.clock_steps_back_total", "counter",
                   "Wall-clock steps back behind the last sample timestamp (stamps then catch up).",
                   [((), float(self.steps_back))]),
            Family("time.stamps_ahead_seconds", "gauge",
                   "How far sample timestamps run ahead of the wall clock after a step back; 0 normally.",
                   [((), self.ahead_ms / 1000)]),
        ]

    def now_ms(self) -> int:
        wall = int(self.clock.wall() * 1000)
        mono = self.clock.monotonic()
        stamp = wall
        if self._last is not None:
            last_stamp, last_wall, last_mono = self._last
            elapsed_ms = (mono - last_mono) * 1000
            if wall < last_wall:  # stepped back by more than the time since the last stamp
                self._stepped_back(round(last_wall + elapsed_ms - wall), last_stamp - wall)
            if wall <= last_stamp and last_stamp - wall <= self.max_catch_up_ms:
                stamp = last_stamp + max(1, int(elapsed_ms * CATCH_UP_SPEED))
            elif self.ahead_ms > 0 and wall > last_stamp:
                event(self.log, logging.INFO, "wall clock caught up with the sample timestamps: "
                      "stamping with it again", steps_back_total=self.steps_back)
        self.ahead_ms = stamp - wall
        self._last = (stamp, wall, mono)
        return stamp

    def _stepped_back(self, step_ms: int, behind_ms: int) -> None:
        self.steps_back += 1
        if behind_ms > self.max_catch_up_ms:
            event(self.log, logging.WARNING, "wall clock stepped back further than remote.max_future: "
                  "stamping samples with it at once (the samples before were stamped that far ahead)",
                  step_s=round(step_ms / 1000, 3), steps_back_total=self.steps_back)
            return
        event(self.log, logging.WARNING, "wall clock stepped back: samples go on being stamped after the "
              f"last one, at {CATCH_UP_SPEED:.0%} of real time, until the clock catches up",
              step_s=round(step_ms / 1000, 3), behind_s=round(behind_ms / 1000, 3),
              catch_up_s=round(behind_ms / 1000 / (1 - CATCH_UP_SPEED)), steps_back_total=self.steps_back)


@dataclass(frozen=True)
class SkewMeasurement:
    skew_ms: float          # remote clock minus local clock (positive: local is behind)
    rtt_ms: float
    url: str


def skew_from(date_header: str | None, sent_wall: float, received_wall: float) -> float | None:
    """Skew in ms, comparing the server's Date with our clock at the middle of the round
    trip. The Date header has 1 s resolution and is truncated, so add 0.5 s to it."""
    remote = parse_http_date(date_header)
    if remote is None:
        return None
    local_mid = (sent_wall + received_wall) / 2
    return (remote + 0.5 - local_mid) * 1000


def fetch_date(url: str, timeout: float) -> tuple[str | None, float, float]:
    """HEAD ``url`` (through HTTPS_PROXY / HTTP_PROXY unless NO_PROXY names the host);
    returns (Date header, wall time sent, wall time received)."""
    sent = time.time()
    response = httpclient.request(url, "HEAD", {"User-Agent": "belabox-metrics"}, timeout=timeout,
                                  use_environment_proxies=True)
    return response.header("Date"), sent, time.time()


def measure_skew(url: str, timeout: float,
                 fetch: Callable[[str, float], tuple[str | None, float, float]] = fetch_date) -> SkewMeasurement | None:
    date, sent, received = fetch(url, timeout)
    skew = skew_from(date, sent, received)
    if skew is None:
        return None
    return SkewMeasurement(skew_ms=skew, rtt_ms=(received - sent) * 1000, url=url)
