"""Time as a seam: every component takes a Clock so tests run in milliseconds.

``wall()`` is the real-time clock (seconds since the epoch, may jump); ``monotonic()``
never goes backwards and is what schedules and measures intervals. ``wait(seconds, stop)``
sleeps but returns early (True) when ``stop`` is set, so shutdown is never delayed by a
sleep.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> float: ...

    def monotonic(self) -> float: ...

    def wait(self, seconds: float, stop: threading.Event) -> bool: ...


class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        if seconds <= 0:
            return stop.is_set()
        return stop.wait(seconds)


class FakeClock:
    """A clock for tests: ``wait`` advances time instantly instead of sleeping."""

    def __init__(self, wall: float = 1_700_000_000.0, monotonic: float = 1000.0) -> None:
        self._wall = wall
        self._mono = monotonic
        self.waits: list[float] = []

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Step the wall clock only (NTP sync, manual set)."""
        self._wall += seconds

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        self.waits.append(seconds)
        if stop.is_set():
            return True
        if seconds > 0:
            self.advance(seconds)
        return stop.is_set()


def wall_ms(clock: Clock) -> int:
    return int(clock.wall() * 1000)
