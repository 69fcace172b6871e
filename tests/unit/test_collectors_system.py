"""system: load averages, uptime, boot time = wall − uptime (truncated like btime)."""

from __future__ import annotations

from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.collectors.base import CollectorContext, CollectorError, MetricSettings
from belabox_metrics.collectors.procfs import FsRoot
from belabox_metrics.collectors.system import (
    SystemCollector,
    boot_time,
    parse_loadavg,
    parse_uptime,
)


def test_parsers() -> None:
    assert parse_loadavg("0.14 0.11 0.04 1/85 5535\n") == (0.14, 0.11, 0.04)
    assert parse_uptime("1197.13 2346.15\n") == 1197.13
    assert boot_time(1_700_000_000.0, 86400.52) == 1699913599.0


def test_collector_follows_a_wall_clock_step(tmp_path: Path) -> None:
    (tmp_path / "loadavg").write_text("3.12 2.87 2.40 4/312 15234\n")
    (tmp_path / "uptime").write_text("100.50 10.00\n")
    clock = FakeClock(wall=1_000_000_000.0)
    ctx = CollectorContext(FsRoot(str(tmp_path), str(tmp_path)), clock, "t")
    collector = SystemCollector(MetricSettings("system", 5.0), ctx)
    samples = {s.name: s.value for s in collector.collect(1)}
    assert samples == {"system.load1": 3.12, "system.load5": 2.87, "system.load15": 2.40,
                       "system.uptime_seconds": 100.5, "system.boot_time_seconds": 999999899.0}
    # NTP steps the clock forward by a day: boot time moves, uptime does not.
    clock.jump_wall(86400)
    samples = {s.name: s.value for s in collector.collect(2)}
    assert samples["system.boot_time_seconds"] == 999999899.0 + 86400


def test_unreadable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "loadavg").write_text("garbage\n")
    (tmp_path / "uptime").write_text("1.0 1.0\n")
    ctx = CollectorContext(FsRoot(str(tmp_path), str(tmp_path)), FakeClock(), "t")
    with pytest.raises(CollectorError):
        SystemCollector(MetricSettings("system", 5.0), ctx).collect(1)
