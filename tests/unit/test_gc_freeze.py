"""Long-lived objects kept out of the garbage collector's full passes, and no reference cycle
outliving the next refreeze (issue 21)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.runtime.gc_freeze import GcFreezer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_freezes_once_settled_then_every_period() -> None:
    clock = FakeClock()
    freezer = GcFreezer(clock, settle=30.0, every=600.0)
    assert not freezer.run() and gc.get_freeze_count() == 0
    clock.advance(30.0)
    assert freezer.run() and gc.get_freeze_count() > 0
    clock.advance(599.0)
    assert not freezer.run()
    clock.advance(1.0)
    assert freezer.run() and freezer.freezes_total == 2


def test_a_full_collection_skips_frozen_objects() -> None:
    clock = FakeClock()
    freezer = GcFreezer(clock, settle=0.0)
    kept = [Node() for _ in range(20_000)]
    tracked_before = len(gc.get_objects())
    freezer.run()
    assert len(gc.get_objects()) < tracked_before - 19_000  # no longer walked by a collection
    assert all(isinstance(n, Node) for n in kept)  # still alive, only frozen


def test_a_cycle_dropped_after_a_freeze_is_freed_by_the_next_refreeze() -> None:
    clock = FakeClock()
    freezer = GcFreezer(clock, settle=0.0, every=600.0)
    ref = cycle()  # alive (a strong reference held by the cycle itself) until collected
    holder = ref()
    freezer.run()
    del holder
    gc.collect()
    assert ref() is not None  # frozen: the collector does not look at it
    clock.advance(600.0)
    freezer.run()
    assert ref() is None


def test_the_first_freeze_raises_the_young_generations_threshold_only() -> None:
    clock = FakeClock()
    gc.set_threshold(700, 10, 10)
    freezer = GcFreezer(clock, settle=30.0, every=600.0, young=10_000)
    freezer.run()
    assert gc.get_threshold() == (700, 10, 10)  # not before the caches have settled
    clock.advance(30.0)
    freezer.run()
    assert gc.get_threshold() == (10_000, 10, 10)
    gc.set_threshold(5_000, 10, 10)  # set by someone else since: a refreeze leaves it
    clock.advance(600.0)
    assert freezer.run()
    assert gc.get_threshold() == (5_000, 10, 10)


def test_short_lived_containers_set_off_fewer_young_collections() -> None:
    clock = FakeClock()
    gc.set_threshold(700, 10, 10)
    freezer = GcFreezer(clock, settle=0.0, young=10_000)
    counts = []
    for _ in range(2):
        before = gc.get_stats()[0]["collections"]
        batches = [[(i, [i]) for i in range(5_000)] for _ in range(20)]  # a round's tuples, alive together
        del batches
        counts.append(gc.get_stats()[0]["collections"] - before)
        freezer.run()
    assert counts[1] * 5 < counts[0]
