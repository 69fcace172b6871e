"""Keep the agent's long-lived objects out of Python's full garbage collections.

CPython's cyclic collector runs a full pass (every tracked object) whenever the objects
that survived younger passes exceed a quarter of the long-lived ones. An upload claim holds
thousands of rows for a moment, so at thousands of series nearly every cycle set one off, and
each walked all the long-lived objects (series caches, label tuples, the collectors' state)
to find nothing: 20 % of the agent's CPU at 7,300 series (bench_cpu_parts --scale 100).

``gc.freeze()`` moves every object alive now into a permanent generation the collector
skips. Frozen objects are still freed by reference counting; only a reference cycle among
them would outlive its use, so each refreeze first unfreezes and collects everything: what
became cyclic garbage since the last one is freed then, and nothing accumulates. The first
freeze waits until the caches have filled (``settle`` after start), then one every
``every`` seconds (a full collection of the then few unfrozen objects and the rest, ~25 ms at
7,300 series).

With the first freeze the youngest generation's threshold goes from CPython's 700 to
``young`` (10,000) allocations: a collection round at thousands of series builds tens of
thousands of tuples that live until the round is stored, so at 700 every one of them was
walked by a young collection, promoted, and walked again by the older ones (432 young and 38
middle collections a minute at 7,300 series, 58 ms of CPU a minute, besides the full ones
that their promotions set off). The older generations' thresholds stay CPython's; a cycle of
garbage waits at most ``young`` allocations longer to be found.
"""

from __future__ import annotations

import gc

from belabox_metrics.clock import Clock


class GcFreezer:
    def __init__(self, clock: Clock, *, settle: float = 30.0, every: float = 600.0,
                 young: int = 10_000) -> None:
        self.clock = clock
        self.every = every
        self.young = young
        self.next_at = clock.monotonic() + settle
        self.freezes_total = 0
        self.frozen = 0

    def run(self) -> bool:
        """Refreeze when due (the upload thread calls this between cycles). True if it did."""
        now = self.clock.monotonic()
        if now < self.next_at:
            return False
        self.next_at = now + self.every
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        if self.freezes_total == 0:
            _, middle, old = gc.get_threshold()
            gc.set_threshold(self.young, middle, old)
        self.freezes_total += 1
        self.frozen = gc.get_freeze_count()
        return True
