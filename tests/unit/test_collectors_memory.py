"""memory: /proc/meminfo, used = total − available, guards for odd kernels/containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.collectors.base import CollectorContext, CollectorError, MetricSettings
from belabox_metrics.collectors.memory import MemoryCollector, memory_figures, parse_meminfo
from belabox_metrics.collectors.procfs import FsRoot

MEMINFO = """MemTotal:        8039232 kB
MemFree:         5123456 kB
MemAvailable:    6543210 kB
Buffers:           23456 kB
Cached:          1403212 kB
SwapTotal:       4019612 kB
SwapFree:        3967212 kB
HugePages_Total:       0
"""


def test_parse_meminfo_kib_to_bytes_and_counts_unscaled() -> None:
    info = parse_meminfo(MEMINFO)
    assert info["MemTotal"] == 8039232 * 1024
    assert info["HugePages_Total"] == 0


def test_used_is_total_minus_available() -> None:
    figures = memory_figures(parse_meminfo(MEMINFO))
    assert figures.used == (8039232 - 6543210) * 1024
    assert figures.swap_used == (4019612 - 3967212) * 1024


def test_available_above_total_is_clamped() -> None:
    info = parse_meminfo(MEMINFO.replace("6543210", "9999999"))
    figures = memory_figures(info)
    assert figures.available == figures.total and figures.used == 0


@pytest.mark.parametrize("text", [
    MEMINFO.replace("MemAvailable:    6543210 kB\n", ""),   # kernel < 3.14
    MEMINFO.replace("6543210", "0"),                         # LXC reporting 0
])
def test_missing_or_zero_available_is_estimated(text: str) -> None:
    figures = memory_figures(parse_meminfo(text))
    assert figures.available == (5123456 + 23456 + 1403212) * 1024


def test_collector_samples_and_error(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text(MEMINFO)
    ctx = CollectorContext(FsRoot(str(tmp_path), str(tmp_path)), FakeClock(), "t")
    samples = {s.name: s.value for s in MemoryCollector(MetricSettings("memory", 5.0), ctx).collect(7)}
    assert samples == {
        "memory.total_bytes": 8039232 * 1024.0,
        "memory.available_bytes": 6543210 * 1024.0,
        "memory.used_bytes": (8039232 - 6543210) * 1024.0,
        "memory.swap_total_bytes": 4019612 * 1024.0,
        "memory.swap_used_bytes": 52400 * 1024.0,
    }
    (tmp_path / "meminfo").write_text("MemFree: 1 kB\n")
    with pytest.raises(CollectorError, match="MemTotal"):
        MemoryCollector(MetricSettings("memory", 5.0), ctx).collect(8)
