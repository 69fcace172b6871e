"""`disk`: read/write bytes and operations per block device, as counters and per-second
rates, from /proc/diskstats.

Sectors in /proc/diskstats are always 512 bytes, whatever the device's logical sector size
(kernel Documentation/block/stat.rst; psutil and node_exporter use the same constant). An
NVMe or eMMC with 4096-byte sectors still counts 512-byte units there: multiplying by the
device's sector size would overcount 8×.

By default only whole physical devices are reported: partitions (``mmcblk0p1``,
``nvme0n1p1``; sysfs says so with ``/sys/class/block/<name>/partition``) would count the
same I/O twice, and so would ``dm-*``/``md*`` stacked on the disks; ``loop*``, ``ram*``,
``zram*`` are memory or files, and ``mmcblk*boot*``/``*rpmb`` are eMMC hardware partitions.
``devices: <regex>`` replaces that rule with an explicit choice (the whole name must match).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from belabox_metrics.collectors.base import (
    CollectorContext,
    CollectorError,
    CollectorSpec,
    MetricSettings,
    register,
)
from belabox_metrics.collectors.host_counters import (
    LabelCache,
    counter_deltas,
    elapsed_seconds,
    import_psutil,
    per_second,
)
from belabox_metrics.collectors.procfs import FsRoot
from belabox_metrics.model import Sample
from belabox_metrics.validation import Reader

SECTOR_BYTES = 512  # the unit of /proc/diskstats, never the device's sector size

READ_BYTES = "disk.read_bytes_total"
WRITTEN_BYTES = "disk.written_bytes_total"
READS = "disk.reads_total"
WRITES = "disk.writes_total"
IO_TIME = "disk.io_time_seconds_total"
READ_RATE = "disk.read_bytes_per_second"
WRITE_RATE = "disk.written_bytes_per_second"
READS_RATE = "disk.reads_per_second"
WRITES_RATE = "disk.writes_per_second"
RESETS = "disk.counter_resets_total"

# Never whole physical disks: virtual, stacked, or eMMC boot/RPMB areas.
NOT_A_DISK = re.compile(
    r"(?:loop|ram|zram|dm-|md|sr|nbd|fd|ubiblock|mtdblock)\d.*|.+boot\d+|.+rpmb"
)
# Partition names, for trees without /sys/class/block (sysfs is asked first).
PARTITION_NAME = re.compile(r"(?:[shv]d[a-z]+|xvd[a-z]+)\d+|.+\dp\d+")


class DiskCounters(NamedTuple):
    """One /proc/diskstats line, in bytes and operations."""

    name: str
    reads: int
    read_bytes: int
    writes: int
    written_bytes: int
    io_time_ms: int



def parse_diskstats(text: str, wanted: Callable[[str], bool] | None = None) -> list[DiskCounters]:
    """/proc/diskstats -> counters per device (only those ``wanted`` accepts, when given);
    sectors × 512 bytes, always."""
    out: list[DiskCounters] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 14 or (wanted is not None and not wanted(fields[2])):
            continue
        # major minor name reads merged sectors ms writes merged sectors ms inflight io_ms ...
        out.append(DiskCounters(
            name=fields[2],
            reads=int(fields[3]),
            read_bytes=int(fields[5]) * SECTOR_BYTES,
            writes=int(fields[7]),
            written_bytes=int(fields[9]) * SECTOR_BYTES,
            io_time_ms=int(fields[12]),
        ))
    return out


def is_whole_physical_disk(name: str, fs: FsRoot | None) -> bool:
    if NOT_A_DISK.fullmatch(name):
        return False
    if fs is not None and fs.exists_sys("class", "block", name):
        return not fs.exists_sys("class", "block", name, "partition")
    return PARTITION_NAME.fullmatch(name) is None


@dataclass(frozen=True)
class Options:
    devices: str | None = None


def parse_options(reader: Reader) -> Options:
    return Options(devices=reader.regex("devices", None))


def psutil_disk_counters() -> list[DiskCounters]:
    """macOS: psutil's per-disk counters (already in bytes)."""
    psutil = import_psutil()

    counters = psutil.disk_io_counters(perdisk=True) or {}
    return [
        DiskCounters(name, c.read_count, c.read_bytes, c.write_count, c.write_bytes,
                     int(getattr(c, "busy_time", 0)))
        for name, c in counters.items()
    ]


class DiskCollector:
    def __init__(self, settings: MetricSettings, ctx: CollectorContext,
                 counters: Callable[[], list[DiskCounters]] | None = None) -> None:
        self.ctx = ctx
        self.options: Options = settings.options or Options()
        darwin = sys.platform == "darwin"
        if counters is None:
            if darwin:
                counters = psutil_disk_counters
            else:
                diskstats = ctx.fs.open_proc("diskstats", sequential=True)
                counters = lambda: parse_diskstats(diskstats.read(), self.wanted)  # noqa: E731
        self.counters = counters
        self._pattern = re.compile(self.options.devices) if self.options.devices else None
        self._sysfs = None if darwin else ctx.fs
        self._wanted: dict[str, bool] = {}
        self._previous: dict[str, tuple[int, ...]] = {}
        self._previous_at: float | None = None
        self.resets = 0
        self._labels = LabelCache("device")

    def wanted(self, name: str) -> bool:
        verdict = self._wanted.get(name)
        if verdict is None:
            if self._pattern is not None:
                verdict = self._pattern.fullmatch(name) is not None
            else:
                verdict = is_whole_physical_disk(name, self._sysfs)
            if len(self._wanted) > 4096:
                self._wanted.clear()
            self._wanted[name] = verdict
        return verdict

    def collect(self, now_ms: int) -> list[Sample]:
        try:
            devices = self.counters()
        except (OSError, ValueError) as exc:
            raise CollectorError(f"cannot read disk counters: {exc}") from exc
        now = self.ctx.clock.monotonic()
        elapsed = elapsed_seconds(self._previous_at, now)
        previous = self._previous
        current: dict[str, tuple[int, ...]] = {}
        samples: list[Sample] = []
        append = samples.append
        for disk in devices:
            name = disk.name
            if not self.wanted(name):
                continue
            labels = self._labels(name)
            values = disk[1:5]
            current[name] = values
            append(Sample(READS, float(disk.reads), now_ms, labels))
            append(Sample(READ_BYTES, float(disk.read_bytes), now_ms, labels))
            append(Sample(WRITES, float(disk.writes), now_ms, labels))
            append(Sample(WRITTEN_BYTES, float(disk.written_bytes), now_ms, labels))
            append(Sample(IO_TIME, disk.io_time_ms / 1000.0, now_ms, labels))
            before = previous.get(name)
            if before is None or elapsed is None:
                continue
            deltas, reset = counter_deltas(before, values)
            if reset:
                self.resets += 1
            reads, read_bytes, writes, written_bytes = deltas
            append(Sample(READS_RATE, per_second(reads, elapsed), now_ms, labels))
            append(Sample(READ_RATE, per_second(read_bytes, elapsed), now_ms, labels))
            append(Sample(WRITES_RATE, per_second(writes, elapsed), now_ms, labels))
            append(Sample(WRITE_RATE, per_second(written_bytes, elapsed), now_ms, labels))
        self._previous = current
        self._previous_at = now
        samples.append(Sample(RESETS, float(self.resets), now_ms))
        return samples


SPEC = register(CollectorSpec(
    name="disk",
    factory=DiskCollector,
    description="Block device I/O: bytes and operations read/written (counters and per-second "
                "rates), whole physical devices by default",
    default_interval=10.0,
    parse_options=parse_options,
))
