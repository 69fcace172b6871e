"""A bandwidth budget for the uplink that carries the live video.

A token bucket in bytes, refilled at the configured rate (a lower one while a stream is
live), charged with the compressed request bytes actually sent. The uploader asks it how
long to wait before the next request; it never drops data, it only spreads it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from belabox_metrics.clock import Clock
from belabox_metrics.selfmetrics import Family


@dataclass(frozen=True)
class BandwidthSettings:
    max_bytes_per_second: int = 64 * 1024     # idle uplink: a backlog drains in seconds, not hours
    live_bytes_per_second: int = 8 * 1024     # while streaming: ~64 kbit/s, under 1 % of a bonded uplink
    burst_bytes: int = 256 * 1024             # one full request may go at once
    live_hold: float = 15.0                   # live until no collector said so for this long
    live_settle: float = 30.0                 # after a start: live until the collectors answered, at most this


class TokenBucket:
    def __init__(self, clock: Clock, settings: BandwidthSettings, live: Callable[[], bool] = lambda: False) -> None:
        self.clock = clock
        self.settings = settings
        self.live = live
        # Full, but never above the live capacity while live (or not known yet, right after a
        # restart in the middle of a stream): no saved-up idle burst lands on the stream.
        self.tokens = self.capacity()
        self.updated = clock.monotonic()
        self.waited_seconds = 0.0
        self.bytes_charged = 0

    def families(self) -> list[Family]:
        return [
            Family("uploader.bandwidth_limit_bytes_per_second", "gauge",
                   "Upload budget in force now (compressed bytes per second).", [((), float(self.rate()))]),
            Family("uploader.bandwidth_wait_seconds_total", "counter",
                   "Time uploads waited for the bandwidth budget.", [((), self.waited_seconds)]),
        ]

    def rate(self) -> int:
        return self.settings.live_bytes_per_second if self.live() else self.settings.max_bytes_per_second

    def capacity(self) -> float:
        # While live the bucket is also smaller: no saved-up burst lands on the stream.
        if self.live():
            return float(min(self.settings.burst_bytes, max(self.settings.live_bytes_per_second, 1) * 2))
        return float(self.settings.burst_bytes)

    def max_request_bytes(self) -> float:
        """The largest request that keeps within the bucket: a bigger one would go at once
        when the bucket is full and leave it in debt, a burst over the allowance."""
        return self.capacity()

    def _refill(self) -> None:
        now = self.clock.monotonic()
        self.tokens = min(self.capacity(), self.tokens + (now - self.updated) * self.rate())
        self.updated = now

    def delay_for(self, size: int) -> float:
        """Seconds to wait before ``size`` bytes may go. A request larger than the bucket
        waits until the bucket is full, then goes (and leaves it in debt)."""
        self._refill()
        need = min(float(size), self.capacity())
        # Within a byte is enough: float rounding must not leave an endless 1e-16 s wait.
        if self.tokens >= need - 1.0:
            return 0.0
        return max(0.001, (need - self.tokens) / max(self.rate(), 1))

    def charge(self, size: int) -> None:
        self._refill()
        self.tokens -= size
        self.bytes_charged += size
