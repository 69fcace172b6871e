"""cpu: /proc/stat parsing, busy/total deltas, first cycle, hotplug, options."""

from __future__ import annotations

from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.collectors.base import CollectorContext, CollectorError, MetricSettings
from belabox_metrics.collectors.cpu import (
    CpuCollector,
    Options,
    busy_total_delta,
    parse_boot_time,
    parse_kilohertz,
    parse_proc_stat,
    usage_percent,
)
from belabox_metrics.collectors.procfs import FsRoot

STAT = """cpu  300 0 100 1000 10 0 5 0 50 0
cpu0 100 0 50 500 5 0 3 0 50 0
cpu1 200 0 50 500 5 0 2 0 0 0
intr 1 2 3
ctxt 5
btime 1699913599
processes 7
"""


def test_parse_proc_stat_keys_fields_and_guest_dropped() -> None:
    times = parse_proc_stat(STAT)
    assert list(times) == ["all", "0", "1"]
    # user nice system idle iowait irq softirq steal; guest (50) is not among them
    assert times["0"] == (100, 0, 50, 500, 5, 0, 3, 0)
    assert parse_boot_time(STAT) == 1699913599


def test_parse_proc_stat_old_kernel_short_lines() -> None:
    # Linux 2.6.0 had 7 fields (no steal, guest): the missing ones are 0.
    assert parse_proc_stat("cpu0 1 2 3 4 5 6 7\n")["0"] == (1, 2, 3, 4, 5, 6, 7, 0)


def test_busy_total_delta_and_percent() -> None:
    before = (100, 0, 50, 500, 5, 0, 3, 0)
    after = (130, 0, 60, 550, 15, 0, 3, 2)
    busy, total = busy_total_delta(before, after) or (0, 0)
    assert (busy, total) == (42, 102)
    assert usage_percent(busy, total) == round(100 * 42 / 102, 2)  # 2 decimals: no more precision is real


def test_iowait_may_fall_while_idle_plus_iowait_rises() -> None:
    assert busy_total_delta((0, 0, 0, 100, 50, 0, 0, 0), (10, 0, 0, 200, 20, 0, 0, 0)) == (10, 80)


@pytest.mark.parametrize("after", [
    (99, 0, 50, 500, 5, 0, 3, 0),    # user went back
    (100, 0, 50, 490, 5, 0, 3, 0),   # idle + iowait went back (hotplug)
    (100, 0, 50, 500, 5, 0, 3, 0),   # nothing changed: fine (returned as zero interval)
])
def test_backwards_is_none_and_no_time_is_no_percent(after: tuple[int, ...]) -> None:
    before = (100, 0, 50, 500, 5, 0, 3, 0)
    delta = busy_total_delta(before, after)
    if after == before:
        assert delta == (0, 0) and usage_percent(0, 0) is None
    else:
        assert delta is None


def test_kilohertz() -> None:
    assert parse_kilohertz("1800000\n") == 1.8e9


def make(tmp_path: Path, stat: str, options: Options | None = None) -> tuple[CpuCollector, Path]:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "stat").write_text(stat)
    ctx = CollectorContext(FsRoot(str(proc), str(tmp_path / "sys")), FakeClock(), "t")
    return CpuCollector(MetricSettings("cpu", 5.0, options=options), ctx), proc / "stat"


def test_first_cycle_has_no_usage_then_second_has(tmp_path: Path) -> None:
    collector, stat = make(tmp_path, STAT)
    first = collector.collect(1)
    assert [s.name for s in first] == ["cpu.counter_resets_total"]
    stat.write_text(STAT.replace("cpu0 100 0 50 500", "cpu0 150 0 50 550")
                    .replace("cpu1 200 0 50 500", "cpu1 200 0 50 600"))
    second = {s.label("cpu"): s.value for s in collector.collect(2) if s.label("cpu")}
    assert second == {"0": 50.0, "1": 0.0, "all": 25.0}


def test_core_whose_counters_did_not_move_has_no_sample(tmp_path: Path) -> None:
    # No time passed on cpu1 (no division by zero): no sample for it, "all" from cpu0.
    collector, stat = make(tmp_path, STAT)
    collector.collect(1)
    stat.write_text(STAT.replace("cpu0 100 0 50 500", "cpu0 150 0 50 550"))
    second = {s.label("cpu"): s.value for s in collector.collect(2) if s.label("cpu")}
    assert second == {"0": 50.0, "all": 50.0}


def test_core_coming_online_gets_a_baseline_first(tmp_path: Path) -> None:
    collector, stat = make(tmp_path, "cpu0 1 0 0 10 0 0 0 0\n")
    collector.collect(1)
    stat.write_text("cpu0 2 0 0 19 0 0 0 0\ncpu1 5 0 0 5 0 0 0 0\n")
    cores = {s.label("cpu") for s in collector.collect(2) if s.name == "cpu.usage_percent"}
    assert cores == {"0", "all"}
    stat.write_text("cpu0 3 0 0 28 0 0 0 0\ncpu1 15 0 0 5 0 0 0 0\n")
    usage = {s.label("cpu"): s.value for s in collector.collect(3) if s.label("cpu")}
    assert usage == {"0": 10.0, "1": 100.0, "all": 55.0}


def test_per_core_off_keeps_all(tmp_path: Path) -> None:
    collector, stat = make(tmp_path, STAT, Options(per_core=False, frequency=False))
    collector.collect(1)
    stat.write_text(STAT.replace("cpu0 100", "cpu0 200"))
    assert {s.label("cpu") for s in collector.collect(2)} == {"all", None}


def test_no_stat_file_is_an_error(tmp_path: Path) -> None:
    ctx = CollectorContext(FsRoot(str(tmp_path), str(tmp_path)), FakeClock(), "t")
    with pytest.raises(CollectorError):
        CpuCollector(MetricSettings("cpu", 5.0), ctx).collect(1)
