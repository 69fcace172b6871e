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
- ``measure_skew`` compares the clock with the ``Date`` header of a reference URL.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from belabox_metrics import httpclient
from belabox_metrics.clock import Clock
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
