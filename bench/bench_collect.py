"""CPU time of one full collection cycle of the six host collectors, samples built, beside
the same reads done by psutil alone.

    .venv/bin/python bench/bench_collect.py [--cycles 1000] [--proc /proc] [--sys /sys]

Each figure is the median over ``--cycles`` cycles of the process CPU time
(CLOCK_PROCESS_CPUTIME_ID) one cycle takes, in µs. psutil's side makes the eight calls the
collectors replace: cpu_times(percpu), virtual_memory, swap_memory,
disk_io_counters(perdisk), net_io_counters(pernic), getloadavg, boot_time and
sensors_temperatures. The target is a full cycle of ours ≤ 200 µs, below psutil's reads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from belabox_metrics.clock import SystemClock
from belabox_metrics.collectors.base import (
    Collector,
    CollectorContext,
    CollectorError,
    MetricSettings,
    registry,
)
from belabox_metrics.collectors.procfs import FsRoot

HOST_COLLECTORS = ("cpu", "memory", "disk", "network", "thermal", "system")


def build_collectors(fs: FsRoot) -> list[Collector]:
    ctx = CollectorContext(fs=fs, clock=SystemClock(), device_id="bench")
    specs = registry()
    return [specs[name].factory(MetricSettings(name, 5.0), ctx) for name in HOST_COLLECTORS]


def ours(collectors: list[Collector]) -> Callable[[], int]:
    def cycle() -> int:
        now_ms = int(time.time() * 1000)
        count = 0
        for collector in collectors:
            try:  # noqa: SIM105 - contextlib.suppress would be timed too
                count += len(collector.collect(now_ms))
            except CollectorError:
                pass  # no thermal zone on a VM: the cycle still pays for looking
        return count

    return cycle


def psutil_reads(psutil: Any) -> Callable[[], int]:
    sensors: Callable[[], object] = getattr(psutil, "sensors_temperatures", lambda: {})

    def cycle() -> int:
        psutil.cpu_times(percpu=True)
        psutil.virtual_memory()
        psutil.swap_memory()
        psutil.disk_io_counters(perdisk=True)
        psutil.net_io_counters(pernic=True)
        psutil.getloadavg()
        psutil.boot_time()
        sensors()
        return 0

    return cycle


def measure(cycle: Callable[[], int], cycles: int) -> tuple[float, int]:
    """(median CPU µs per cycle, samples in the last cycle)."""
    count = cycle()  # warm-up: opens files, first-cycle baselines
    count = cycle()
    clock = time.clock_gettime_ns
    cpu = time.CLOCK_PROCESS_CPUTIME_ID
    timings = []
    for _ in range(cycles):
        start = clock(cpu)
        count = cycle()
        timings.append(clock(cpu) - start)
    return statistics.median(timings) / 1000.0, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--proc", default="/proc")
    parser.add_argument("--sys", default="/sys")
    args = parser.parse_args(argv)
    collectors = build_collectors(FsRoot(args.proc, args.sys))
    ours_us, samples = measure(ours(collectors), args.cycles)
    print(f"belabox-metrics, 6 collectors, {samples} samples built: {ours_us:8.1f} µs/cycle "
          f"(median of {args.cycles})")
    try:
        import psutil
    except ImportError:
        print("psutil not installed: no comparison (pip install psutil)")
        return 0
    if args.proc != "/proc" or args.sys != "/sys":
        print("psutil reads the live /proc and /sys only: comparison skipped")
        return 0
    psutil_us, _ = measure(psutil_reads(psutil), args.cycles)
    print(f"psutil, the same 8 reads, no samples:        {psutil_us:8.1f} µs/cycle "
          f"(median of {args.cycles})")
    print(f"ratio ours/psutil: {ours_us / psutil_us:.2f}  (target: ours ≤ 200 µs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
