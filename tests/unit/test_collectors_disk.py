"""disk: /proc/diskstats parsing (512-byte sectors, always), whole-device selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.collectors.base import CollectorContext, MetricSettings
from belabox_metrics.collectors.disk import (
    SECTOR_BYTES,
    DiskCollector,
    Options,
    is_whole_physical_disk,
    parse_diskstats,
)
from belabox_metrics.collectors.procfs import FsRoot

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proc-sys"


@pytest.mark.parametrize("line", [
    # 14 fields (Linux < 4.18), 18 (discard stats), 20 (flush stats, >= 5.5)
    "259 0 nvme0n1 1000 10 80000 300 500 5 40000 200 0 900 500",
    "259 0 nvme0n1 1000 10 80000 300 500 5 40000 200 0 900 500 0 0 0 0",
    "259 0 nvme0n1 1000 10 80000 300 500 5 40000 200 0 900 500 0 0 0 0 10 50",
])
def test_parse_every_diskstats_generation(line: str) -> None:
    (disk,) = parse_diskstats(line + "\n")
    assert (disk.name, disk.reads, disk.writes, disk.io_time_ms) == ("nvme0n1", 1000, 500, 900)
    assert disk.read_bytes == 80000 * 512 and disk.written_bytes == 40000 * 512


def test_4096_byte_sector_nvme_still_counts_512_byte_units() -> None:
    # The fixture's NVMe says logical_block_size 4096; the kernel's diskstats unit is still
    # 512 bytes (Documentation/block/stat.rst). 80000 sectors = 40,960,000 bytes, never 8x.
    case = FIXTURES / "nvme-4096-sector" / "before"
    block_size = int((case / "sys/block/nvme0n1/queue/logical_block_size").read_text())
    assert block_size == 4096
    text = (case / "proc/diskstats").read_text()
    sectors = int(text.split("nvme0n1 ")[1].split()[2])
    (disk,) = [d for d in parse_diskstats(text) if d.name == "nvme0n1"]
    assert SECTOR_BYTES == 512
    assert disk.read_bytes == sectors * 512 == 40_960_000
    assert disk.read_bytes != sectors * block_size


@pytest.mark.parametrize(("name", "whole"), [
    ("sda", True), ("vda", True), ("mmcblk0", True), ("nvme0n1", True), ("xvda", True),
    ("sda1", False), ("vda2", False), ("mmcblk0p1", False), ("nvme0n1p1", False),
    ("mmcblk0boot0", False), ("mmcblk0boot1", False), ("mmcblk0rpmb", False),
    ("loop0", False), ("ram0", False), ("zram0", False), ("dm-0", False), ("md127", False),
    ("sr0", False), ("nbd0", False),
])
def test_whole_physical_disk_by_name(name: str, whole: bool) -> None:
    assert is_whole_physical_disk(name, None) is whole


def test_sysfs_partition_file_wins_over_the_name(tmp_path: Path) -> None:
    # A whole disk whose name looks like a partition ("md" aside): sysfs is asked first.
    (tmp_path / "class/block/sdb1").mkdir(parents=True)
    (tmp_path / "class/block/weird0").mkdir(parents=True)
    (tmp_path / "class/block/weird0/partition").write_text("1\n")
    fs = FsRoot(str(tmp_path), str(tmp_path))
    assert is_whole_physical_disk("sdb1", fs) is True
    assert is_whole_physical_disk("weird0", fs) is False


def collector(tmp_path: Path, options: Options | None = None) -> tuple[DiskCollector, FakeClock]:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    clock = FakeClock()
    ctx = CollectorContext(FsRoot(str(proc), str(tmp_path / "sys")), clock, "t")
    return DiskCollector(MetricSettings("disk", 5.0, options=options), ctx), clock


def test_devices_pattern_replaces_the_default(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/diskstats").write_text(
        "179 0 mmcblk0 1 0 8 0 1 0 8 0 0 1 1\n179 1 mmcblk0p1 1 0 8 0 1 0 8 0 0 1 1\n"
        "7 0 loop0 1 0 8 0 1 0 8 0 0 1 1\n")
    default, _ = collector(tmp_path)
    assert {s.label("device") for s in default.collect(1)} == {"mmcblk0", None}
    chosen, _ = collector(tmp_path, Options(devices=r"mmcblk0p\d+|loop0"))
    assert {s.label("device") for s in chosen.collect(1)} == {"mmcblk0p1", "loop0", None}


def test_zero_interval_gives_no_rate(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/diskstats").write_text("8 0 sda 1 0 8 0 1 0 8 0 0 1 1\n")
    disk, clock = collector(tmp_path)
    disk.collect(1)
    assert not [s for s in disk.collect(2) if s.name.endswith("_per_second")]
    clock.advance(2.0)
    rates = [s for s in disk.collect(3) if s.name.endswith("_per_second")]
    assert len(rates) == 4 and all(s.value == 0.0 for s in rates)
