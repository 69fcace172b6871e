"""`system`: load averages, uptime and boot time.

Load averages come from /proc/loadavg, uptime from /proc/uptime (the boot-time clock, which
includes suspend). Boot time is the wall clock minus uptime, which is how the kernel
computes the ``btime`` of /proc/stat: so it moves when the wall clock is stepped, as on an
Orange Pi without an RTC battery whose clock is wrong until NTP syncs. A jump of the boot
time is therefore a sign of a clock step, not of a reboot; uptime going down is a reboot.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable

from belabox_metrics.collectors.base import (
    CollectorContext,
    CollectorError,
    CollectorSpec,
    MetricSettings,
    register,
)
from belabox_metrics.collectors.host_counters import import_psutil
from belabox_metrics.model import Sample

LOAD1 = "system.load1"
LOAD5 = "system.load5"
LOAD15 = "system.load15"
UPTIME = "system.uptime_seconds"
BOOT_TIME = "system.boot_time_seconds"


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """/proc/loadavg ("0.14 0.11 0.04 1/85 5535") -> (1, 5, 15 minute averages)."""
    fields = text.split()
    return float(fields[0]), float(fields[1]), float(fields[2])


def parse_uptime(text: str) -> float:
    """/proc/uptime ("1197.13 2346.15") -> seconds since boot."""
    return float(text.split()[0])


def boot_time(wall: float, uptime: float) -> float:
    """Whole seconds since the epoch, truncated like the kernel's btime."""
    return float(math.floor(wall - uptime))


class ProcSystemSource:
    def __init__(self, ctx: CollectorContext) -> None:
        self.loadavg = ctx.fs.open_proc("loadavg")
        self.uptime = ctx.fs.open_proc("uptime")

    def __call__(self) -> tuple[tuple[float, float, float], float]:
        return parse_loadavg(self.loadavg.read()), parse_uptime(self.uptime.read())


def darwin_source(wall: Callable[[], float]) -> Callable[[], tuple[tuple[float, float, float], float]]:
    def read() -> tuple[tuple[float, float, float], float]:
        psutil = import_psutil()

        return os.getloadavg(), wall() - psutil.boot_time()

    return read


class SystemCollector:
    def __init__(self, settings: MetricSettings, ctx: CollectorContext,
                 source: Callable[[], tuple[tuple[float, float, float], float]] | None = None
                 ) -> None:
        self.ctx = ctx
        if source is None:
            source = darwin_source(ctx.clock.wall) if sys.platform == "darwin" \
                else ProcSystemSource(ctx)
        self.source = source

    def collect(self, now_ms: int) -> list[Sample]:
        try:
            (load1, load5, load15), uptime = self.source()
        except (OSError, ValueError, IndexError) as exc:
            raise CollectorError(f"cannot read load average/uptime: {exc}") from exc
        return [
            Sample(LOAD1, load1, now_ms),
            Sample(LOAD5, load5, now_ms),
            Sample(LOAD15, load15, now_ms),
            Sample(UPTIME, uptime, now_ms),
            Sample(BOOT_TIME, boot_time(self.ctx.clock.wall(), uptime), now_ms),
        ]


SPEC = register(CollectorSpec(
    name="system",
    factory=SystemCollector,
    description="Load averages (1, 5, 15 min), uptime and boot time in seconds",
    default_interval=30.0,
))
