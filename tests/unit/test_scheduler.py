"""The collection schedule: fixed grid on the monotonic clock, no drift, missed ticks
skipped, a failing collector counted and never stopping the others."""

from __future__ import annotations

import logging
import threading

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.collectors.base import MetricSettings
from belabox_metrics.model import Sample
from belabox_metrics.runtime.collection import CollectionLoop, ScheduledMetric, next_due

LOG = logging.getLogger("test")


class SlowCollector:
    """Takes ``cost`` seconds of (fake) time per call and records when it was called."""

    def __init__(self, clock: FakeClock, name: str, cost: float = 0.0, fail: bool = False) -> None:
        self.clock, self.name, self.cost, self.fail = clock, name, cost, fail
        self.calls_mono: list[float] = []
        self.calls_ms: list[int] = []

    def collect(self, now_ms: int) -> list[Sample]:
        self.calls_mono.append(self.clock.monotonic())
        self.calls_ms.append(now_ms)
        self.clock.advance(self.cost)
        if self.fail:
            raise OSError("sensor gone")
        return [Sample(self.name, 1.0, now_ms)]


def make_loop(clock: FakeClock, *collectors: tuple[SlowCollector, float]) -> tuple[CollectionLoop, list[Sample]]:
    stored: list[Sample] = []

    def store(samples: list[Sample]) -> int:
        stored.extend(samples)
        return len(samples)

    start = clock.monotonic()
    metrics = [ScheduledMetric(MetricSettings(c.name, interval), c, due=start) for c, interval in collectors]
    return CollectionLoop(metrics, store, clock, LOG), stored


@pytest.mark.parametrize(("prev", "interval", "now", "expected"), [
    (10.0, 1.0, 10.3, 11.0),   # on time
    (10.0, 1.0, 10.999, 11.0),
    (10.0, 1.0, 11.0, 12.0),   # exactly on the next tick: that one is due now, so the one after
    (10.0, 1.0, 13.5, 14.0),   # three ticks missed: skipped, not replayed in a burst
    (10.0, 0.5, 10.0, 10.5),
])
def test_next_due(prev: float, interval: float, now: float, expected: float) -> None:
    assert next_due(prev, interval, now) == pytest.approx(expected)


def test_slow_collector_does_not_drift() -> None:
    clock = FakeClock(monotonic=100.0)
    collector = SlowCollector(clock, "a", cost=0.37)
    loop, stored = make_loop(clock, (collector, 1.0))
    loop.run(threading.Event(), max_rounds=50)
    # Every call lands exactly on the 1 s grid, although each one took 0.37 s.
    assert collector.calls_mono == pytest.approx([100.0 + k for k in range(50)])
    assert len(stored) == 50


def test_two_intervals_interleave_on_their_own_grids() -> None:
    clock = FakeClock(monotonic=0.0)
    fast, slow = SlowCollector(clock, "fast", cost=0.01), SlowCollector(clock, "slow", cost=0.01)
    loop, _ = make_loop(clock, (fast, 0.5), (slow, 2.0))
    loop.run(threading.Event(), max_rounds=20)
    assert fast.calls_mono[:9] == pytest.approx([0.5 * k for k in range(9)])
    # Due in the same round as `fast`, `slow` runs right after it (0.01 s later), on its grid.
    assert slow.calls_mono[:3] == pytest.approx([0.01, 2.01, 4.01])


def test_overrun_skips_missed_ticks() -> None:
    clock = FakeClock(monotonic=0.0)
    collector = SlowCollector(clock, "a", cost=2.5)  # longer than its 1 s interval
    loop, _ = make_loop(clock, (collector, 1.0))
    loop.run(threading.Event(), max_rounds=4)
    assert collector.calls_mono == pytest.approx([0.0, 3.0, 6.0, 9.0])


def test_failing_collector_is_counted_and_others_continue() -> None:
    clock = FakeClock(monotonic=0.0)
    good, broken = SlowCollector(clock, "good"), SlowCollector(clock, "broken", fail=True)
    loop, stored = make_loop(clock, (good, 1.0), (broken, 1.0))
    loop.run(threading.Event(), max_rounds=5)
    by_name = {m.settings.name: m for m in loop.metrics}
    assert by_name["broken"].failures == 5 and by_name["broken"].runs == 5
    assert "sensor gone" in (by_name["broken"].last_error or "")
    assert by_name["good"].failures == 0
    assert [s.name for s in stored] == ["good"] * 5


def test_samples_are_stamped_with_wall_time_of_the_round() -> None:
    clock = FakeClock(wall=1_700_000_000.0, monotonic=0.0)
    collector = SlowCollector(clock, "a")
    loop, stored = make_loop(clock, (collector, 1.0))
    loop.run(threading.Event(), max_rounds=3)
    assert [s.timestamp_ms for s in stored] == [1_700_000_000_000, 1_700_000_001_000, 1_700_000_002_000]


def test_store_failure_keeps_samples_and_retries() -> None:
    clock = FakeClock(monotonic=0.0)
    collector = SlowCollector(clock, "a")
    stored: list[Sample] = []
    failing = {"on": True}

    def store(samples: list[Sample]) -> int:
        if failing["on"]:
            raise OSError(28, "No space left on device")
        stored.extend(samples)
        return len(samples)

    loop = CollectionLoop([ScheduledMetric(MetricSettings("a", 1.0), collector, due=0.0)], store, clock, LOG)
    loop.run(threading.Event(), max_rounds=3)
    assert stored == [] and len(loop.unstored) == 3 and loop.store_failures == 3
    failing["on"] = False
    loop.run(threading.Event(), max_rounds=1)
    assert [s.timestamp_ms for s in stored] == sorted(collector.calls_ms) and loop.unstored == []


def test_stop_interrupts_the_wait() -> None:
    clock = FakeClock(monotonic=0.0)
    collector = SlowCollector(clock, "a")
    loop, _ = make_loop(clock, (collector, 60.0))
    stop = threading.Event()
    stop.set()
    loop.run(stop)
    assert collector.calls_mono == []
