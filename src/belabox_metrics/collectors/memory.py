"""`memory`: used, available and total memory and swap, in bytes, from /proc/meminfo.

used = MemTotal − MemAvailable: what the kernel says could be handed to a new program
without swapping, the figure psutil and the dashboards use. Page cache is not "used".
MemAvailable is clamped to MemTotal (some containers report more than the total); where it
is missing (kernels before 3.14) or reads 0 beside free memory (an LXC quirk), it is
estimated as MemFree + Buffers + Cached.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from belabox_metrics.collectors.base import (
    CollectorContext,
    CollectorError,
    CollectorSpec,
    MetricSettings,
    register,
)
from belabox_metrics.collectors.host_counters import import_psutil
from belabox_metrics.model import Sample

TOTAL = "memory.total_bytes"
AVAILABLE = "memory.available_bytes"
USED = "memory.used_bytes"
SWAP_TOTAL = "memory.swap_total_bytes"
SWAP_USED = "memory.swap_used_bytes"


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo -> {field: bytes} (values in "kB" are KiB; unit-less ones are counts)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        out[name] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return out


@dataclass(frozen=True)
class MemoryFigures:
    total: int
    available: int
    swap_total: int
    swap_free: int

    @property
    def used(self) -> int:
        return self.total - self.available

    @property
    def swap_used(self) -> int:
        return max(self.swap_total - self.swap_free, 0)


def memory_figures(meminfo: dict[str, int]) -> MemoryFigures:
    total = meminfo.get("MemTotal")
    if not total:
        raise ValueError("MemTotal missing or 0")
    free = meminfo.get("MemFree", 0)
    available = meminfo.get("MemAvailable")
    if available is None or (available == 0 and free > 0):
        available = free + meminfo.get("Buffers", 0) + meminfo.get("Cached", 0)
    available = min(max(available, 0), total)
    return MemoryFigures(total, available, meminfo.get("SwapTotal", 0), meminfo.get("SwapFree", 0))


def figures_to_samples(figures: MemoryFigures, now_ms: int) -> list[Sample]:
    return [
        Sample(TOTAL, float(figures.total), now_ms),
        Sample(AVAILABLE, float(figures.available), now_ms),
        Sample(USED, float(figures.used), now_ms),
        Sample(SWAP_TOTAL, float(figures.swap_total), now_ms),
        Sample(SWAP_USED, float(figures.swap_used), now_ms),
    ]


def psutil_figures() -> MemoryFigures:
    """macOS: psutil's view (its "used" differs per platform; ours stays total − available)."""
    psutil = import_psutil()

    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return MemoryFigures(int(vm.total), int(vm.available), int(swap.total), int(swap.free))


class MemoryCollector:
    def __init__(self, settings: MetricSettings, ctx: CollectorContext,
                 figures: Callable[[], MemoryFigures] | None = None) -> None:
        if figures is None:
            if sys.platform == "darwin":
                figures = psutil_figures
            else:
                meminfo = ctx.fs.open_proc("meminfo")

                def figures() -> MemoryFigures:
                    return memory_figures(parse_meminfo(meminfo.read()))
        self.figures = figures

    def collect(self, now_ms: int) -> list[Sample]:
        try:
            figures = self.figures()
        except (OSError, ValueError) as exc:
            raise CollectorError(f"cannot read memory figures: {exc}") from exc
        return figures_to_samples(figures, now_ms)


SPEC = register(CollectorSpec(
    name="memory",
    factory=MemoryCollector,
    description="Memory and swap: total, available, used (total − available), in bytes",
    default_interval=10.0,
))
