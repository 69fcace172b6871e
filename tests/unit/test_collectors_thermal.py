"""thermal: zones by type, duplicates, negative temperatures, failures, rescans, mock."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.collectors.base import CollectorContext, CollectorError, MetricSettings
from belabox_metrics.collectors.thermal import (
    RESCAN_SECONDS,
    ThermalCollector,
    parse_millidegrees,
    zone_names,
)
from tests.unit.test_collectors_fixtures import FixtureFs


def zone(sys_root: Path, index: int, zone_type: str, temp: str | None) -> None:
    folder = sys_root / "class/thermal" / f"thermal_zone{index}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "type").write_text(zone_type + "\n")
    if temp is not None:
        (folder / "temp").write_text(temp + "\n")


def make(tmp_path: Path, mock: bool = False) -> tuple[ThermalCollector, FakeClock]:
    clock = FakeClock()
    ctx = CollectorContext(FixtureFs(str(tmp_path / "proc"), str(tmp_path / "sys")), clock, "t")
    return ThermalCollector(MetricSettings("thermal", 5.0, mock=mock), ctx), clock


def temps(samples: list) -> dict[str | None, float | None]:  # type: ignore[type-arg]
    return {s.label("zone"): s.value for s in samples if s.name == "thermal.zone_celsius"}


def test_parse_and_duplicate_names() -> None:
    assert parse_millidegrees("-5500\n") == -5.5
    assert zone_names([("thermal_zone0", "acpitz"), ("thermal_zone1", "x86_pkg_temp"),
                       ("thermal_zone2", "acpitz")]) == [
        ("thermal_zone0", "acpitz"), ("thermal_zone1", "x86_pkg_temp"),
        ("thermal_zone2", "acpitz-1")]


def test_zones_in_index_order_negative_allowed(tmp_path: Path) -> None:
    zone(tmp_path / "sys", 10, "acpitz", "30000")
    zone(tmp_path / "sys", 2, "acpitz", "-12500")
    thermal, _ = make(tmp_path)
    # thermal_zone2 comes before thermal_zone10 (numeric, not text order)
    assert temps(thermal.collect(1)) == {"acpitz": -12.5, "acpitz-1": 30.0}


def test_missing_temp_is_counted_and_all_failing_is_an_error(tmp_path: Path) -> None:
    zone(tmp_path / "sys", 0, "soc-thermal", None)
    zone(tmp_path / "sys", 1, "gpu-thermal", "garbage")
    thermal, _ = make(tmp_path)
    with pytest.raises(CollectorError, match="no thermal zone could be read"):
        thermal.collect(1)
    assert thermal.errors == 2


def test_new_zone_found_at_rescan_and_gone_zone_triggers_one(tmp_path: Path) -> None:
    zone(tmp_path / "sys", 0, "soc-thermal", "50000")
    thermal, clock = make(tmp_path)
    assert temps(thermal.collect(1)) == {"soc-thermal": 50.0}
    zone(tmp_path / "sys", 1, "npu-thermal", "45000")
    assert temps(thermal.collect(2)) == {"soc-thermal": 50.0}  # cached list
    clock.advance(RESCAN_SECONDS)
    assert temps(thermal.collect(3)) == {"soc-thermal": 50.0, "npu-thermal": 45.0}
    # npu's driver unbound: its open temp file answers ENODEV (a sysfs node removed under
    # an open descriptor), counted once, and the next cycle re-scans without waiting.
    (tmp_path / "sys/class/thermal/thermal_zone1/temp.errno").write_text("ENODEV\n")
    samples = thermal.collect(4)
    assert temps(samples) == {"soc-thermal": 50.0}
    errors = {s.label("zone"): s.value for s in samples if s.name == "thermal.zone_errors_total"}
    assert errors == {"soc-thermal": 0.0, "npu-thermal": 1.0}
    shutil.rmtree(tmp_path / "sys/class/thermal/thermal_zone1")
    samples = thermal.collect(5)
    assert temps(samples) == {"soc-thermal": 50.0}
    errors = {s.label("zone"): s.value for s in samples if s.name == "thermal.zone_errors_total"}
    assert errors == {"soc-thermal": 0.0}


def test_no_zone_errors_or_mock(tmp_path: Path) -> None:
    thermal, _ = make(tmp_path)
    with pytest.raises(CollectorError, match="mock: true"):
        thermal.collect(1)
    mocked, _ = make(tmp_path, mock=True)
    (sample,) = mocked.collect(1)
    assert sample.label("source") == "mock" and sample.label("zone") == "mock"
    assert sample.value is not None and 45 <= sample.value <= 55


def test_cooling_devices_are_not_zones(tmp_path: Path) -> None:
    zone(tmp_path / "sys", 0, "soc-thermal", "50000")
    cooling = tmp_path / "sys/class/thermal/cooling_device0"
    cooling.mkdir(parents=True)
    (cooling / "type").write_text("thermal-cpufreq-0\n")
    thermal, _ = make(tmp_path)
    assert temps(thermal.collect(1)) == {"soc-thermal": 50.0}
