"""`cpu.temperature`: the seed's first metric, one thermal zone in °C.

The zone is chosen by its ``type`` (never by index: on mainline kernels zone0 of an RK3588
is ``package-thermal``, on the vendor kernel ``soc-thermal``). Where no sensor exists (a
container, macOS) the metric reports an error each cycle, unless the entry says
``mock: true``: then it produces mock values labelled ``source="mock"`` so they can never
pass for real data. A real sensor always wins over the mock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from belabox_metrics.collectors.base import (
    CollectorContext,
    CollectorError,
    CollectorSpec,
    MetricSettings,
    register,
)
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.validation import Reader

METRIC = "cpu.temperature"
# Preference order when no zone_type is configured: the SoC/package sensor first.
PREFERRED_ZONE_TYPES = (
    "soc-thermal", "cpu-thermal", "cpu_thermal", "package-thermal", "x86_pkg_temp",
    "bigcore0-thermal", "littlecore-thermal", "acpitz",
)


def parse_millidegrees(text: str) -> float:
    """Contents of thermal_zone*/temp (millidegrees C, may be negative) -> °C."""
    return int(text.strip()) / 1000.0


def choose_zone(zones: dict[str, str], wanted: str | None) -> str | None:
    """Pick a zone directory from {zone_dir: type}. ``wanted`` (a type) must match exactly."""
    if wanted is not None:
        return next((z for z, t in zones.items() if t == wanted), None)
    for zone_type in PREFERRED_ZONE_TYPES:
        for zone, found_type in zones.items():
            if found_type == zone_type:
                return zone
    return next(iter(sorted(zones)), None)


@dataclass(frozen=True)
class Options:
    zone_type: str | None = None


def parse_options(reader: Reader) -> Options:
    return Options(zone_type=reader.string("zone_type", None, example="soc-thermal"))


class CpuTemperature:
    def __init__(self, settings: MetricSettings, ctx: CollectorContext,
                 rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self.mock = settings.mock
        self.options: Options = settings.options or Options()
        self.rng = rng or random.Random()
        self._zone: tuple[str, str] | None = None

    def _zones(self) -> dict[str, str]:
        zones: dict[str, str] = {}
        for entry in self.ctx.fs.list_sys("class", "thermal"):
            if entry.startswith("thermal_zone"):
                try:
                    zones[entry] = self.ctx.fs.read_sys("class", "thermal", entry, "type").strip()
                except OSError:
                    continue
        return zones

    def _find_zone(self) -> tuple[str, str] | None:
        if self._zone is None:
            zones = self._zones()
            chosen = choose_zone(zones, self.options.zone_type)
            if chosen is not None:
                self._zone = (chosen, zones[chosen])
        return self._zone

    def collect(self, now_ms: int) -> list[Sample]:
        zone = self._find_zone()
        if zone is None:
            if self.mock:
                value = round(45.0 + self.rng.random() * 10.0, 1)
                return [Sample(METRIC, value, now_ms, make_labels(source="mock"))]
            wanted = f" of type {self.options.zone_type!r}" if self.options.zone_type else ""
            raise CollectorError(
                f"no thermal zone{wanted} under {self.ctx.fs.sys_path('class', 'thermal')}; "
                "set `mock: true` on this metric for labelled mock values on a dev box"
            )
        zone_dir, zone_type = zone
        try:
            text = self.ctx.fs.read_sys("class", "thermal", zone_dir, "temp")
            celsius = parse_millidegrees(text)
        except (OSError, ValueError) as exc:
            # EINVAL/ENODATA from a sensor that is not ready: no sample, never a fake 0.
            raise CollectorError(f"{zone_dir} ({zone_type}): {exc}") from exc
        return [Sample(METRIC, celsius, now_ms, make_labels(zone=zone_type))]


SPEC = register(CollectorSpec(
    name=METRIC,
    factory=CpuTemperature,
    description="CPU/SoC temperature in °C from one thermal zone (chosen by type)",
    default_interval=30.0,
    parse_options=parse_options,
    supports_mock=True,
))
