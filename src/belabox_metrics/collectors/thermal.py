"""`thermal`: the temperature of every thermal zone under /sys/class/thermal, in °C,
labelled by the zone's ``type``.

On an RK3588 vendor kernel the types are soc-thermal, bigcore0-thermal, bigcore1-thermal,
littlecore-thermal, center-thermal, gpu-thermal and npu-thermal. Zones are named by type,
never by index (indices differ between kernels); a type that occurs twice gets ``-1``,
``-2``… appended in index order. ``temp`` is millidegrees and can be negative.

A zone whose sensor errors (EINVAL, ENODATA, EAGAIN from a driver that is not ready) is
skipped this cycle, never reported as 0, and counted in ``thermal.zone_errors_total``; the
other zones are still reported. The zone list is cached and re-scanned every few minutes
or when a zone disappears. Trip points (the temperatures where the kernel throttles or
shuts down) are reported with ``trip_points: true``.

psutil is of no use here: it prefers hwmon and drops device-tree thermal zones when an
NVMe hwmon sensor exists, and it has no temperatures on macOS. Where there is no zone
(macOS, a container) the collector reports an error, or labelled mock values with
``mock: true``.
"""

from __future__ import annotations

import errno
import random
import re
from dataclasses import dataclass

from belabox_metrics.collectors.base import (
    CollectorContext,
    CollectorError,
    CollectorSpec,
    MetricSettings,
    register,
)
from belabox_metrics.collectors.procfs import FsRoot, KernelFile
from belabox_metrics.model import Labels, Sample, make_labels
from belabox_metrics.validation import Reader

ZONE = "thermal.zone_celsius"
TRIP = "thermal.trip_point_celsius"
ERRORS = "thermal.zone_errors_total"
THERMAL_DIR = ("class", "thermal")
RESCAN_SECONDS = 300.0
_ZONE_DIR = re.compile(r"thermal_zone(\d+)")
_TRIP_FILE = re.compile(r"trip_point_(\d+)_temp")
# The zone itself is gone (module unloaded, device removed): look again next cycle.
_GONE = (errno.ENOENT, errno.ENODEV)


def parse_millidegrees(text: str) -> float:
    """Contents of thermal_zone*/temp or trip_point_*_temp (millidegrees C) -> °C."""
    return int(text.strip()) / 1000.0


def zone_names(types: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """[(zone_dir, type)] in index order -> [(zone_dir, label)]: the type, with -1, -2… on
    repeats so every zone keeps a distinct series."""
    seen: dict[str, int] = {}
    out = []
    for zone_dir, zone_type in types:
        count = seen.get(zone_type, 0)
        seen[zone_type] = count + 1
        out.append((zone_dir, zone_type if count == 0 else f"{zone_type}-{count}"))
    return out


@dataclass(frozen=True)
class Options:
    trip_points: bool = False


def parse_options(reader: Reader) -> Options:
    return Options(trip_points=reader.boolean("trip_points", False))


class _Zone:
    __slots__ = ("errors", "labels", "name", "temp", "trips")

    def __init__(self, name: str, temp: KernelFile) -> None:
        self.name = name
        self.temp = temp
        self.labels: Labels = make_labels(zone=name)
        self.errors = 0
        self.trips: list[tuple[Labels, float]] = []


def read_trip_points(fs: FsRoot, zone_dir: str, zone: str) -> list[tuple[Labels, float]]:
    trips = []
    for entry in fs.list_sys(*THERMAL_DIR, zone_dir):
        match = _TRIP_FILE.fullmatch(entry)
        if not match:
            continue
        index = match.group(1)
        try:
            celsius = parse_millidegrees(fs.read_sys(*THERMAL_DIR, zone_dir, entry))
            trip_type = fs.read_sys(*THERMAL_DIR, zone_dir, f"trip_point_{index}_type").strip()
        except (OSError, ValueError):
            continue
        trips.append((int(index), make_labels(zone=zone, trip=index, type=trip_type), celsius))
    return [(labels, celsius) for _, labels, celsius in sorted(trips)]


class ThermalCollector:
    def __init__(self, settings: MetricSettings, ctx: CollectorContext,
                 rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self.fs = ctx.fs
        self.mock = settings.mock
        self.options: Options = settings.options or Options()
        self.rng = rng or random.Random()
        self._zones: list[_Zone] = []
        self._scanned_at: float | None = None
        # Errors survive a re-scan: the counter must not go back to 0.
        self._errors: dict[str, int] = {}

    @property
    def errors(self) -> int:
        return sum(self._errors.values())

    def _scan(self) -> None:
        for zone in self._zones:
            zone.temp.close()
        found = []
        for entry in self.fs.list_sys(*THERMAL_DIR):
            match = _ZONE_DIR.fullmatch(entry)
            if not match:
                continue
            try:
                zone_type = self.fs.read_sys(*THERMAL_DIR, entry, "type").strip()
            except OSError:
                continue
            found.append((int(match.group(1)), entry, zone_type or entry))
        found.sort()
        zones = []
        for zone_dir, name in zone_names([(d, t) for _, d, t in found]):
            zone = _Zone(name, self.fs.open_sys(*THERMAL_DIR, zone_dir, "temp"))
            if self.options.trip_points:
                zone.trips = read_trip_points(self.fs, zone_dir, name)
            self._errors.setdefault(name, 0)
            zones.append(zone)
        self._zones = zones

    def collect(self, now_ms: int) -> list[Sample]:
        now = self.ctx.clock.monotonic()
        if self._scanned_at is None or now - self._scanned_at >= RESCAN_SECONDS:
            self._scan()
            self._scanned_at = now
        if not self._zones:
            if self.mock:
                value = round(45.0 + self.rng.random() * 10.0, 1)
                return [Sample(ZONE, value, now_ms, make_labels(zone="mock", source="mock"))]
            raise CollectorError(
                f"no thermal zone under {self.fs.sys_path(*THERMAL_DIR)}; set `mock: true` "
                "on this metric for labelled mock values on a dev box")
        samples: list[Sample] = []
        failures: list[str] = []
        errors = self._errors
        for zone in self._zones:
            try:
                celsius = parse_millidegrees(zone.temp.read())
            except (OSError, ValueError) as exc:
                errors[zone.name] += 1
                failures.append(f"{zone.name}: {exc}")
                if isinstance(exc, OSError) and exc.errno in _GONE:
                    self._scanned_at = None
                continue
            samples.append(Sample(ZONE, celsius, now_ms, zone.labels))
        if not samples:
            raise CollectorError("no thermal zone could be read: " + "; ".join(failures))
        for zone in self._zones:
            for labels, celsius in zone.trips:
                samples.append(Sample(TRIP, celsius, now_ms, labels))
            samples.append(Sample(ERRORS, float(errors[zone.name]), now_ms, zone.labels))
        return samples


SPEC = register(CollectorSpec(
    name="thermal",
    factory=ThermalCollector,
    description="Temperature of every thermal zone in °C, labelled by zone type; optional "
                "trip points",
    default_interval=10.0,
    parse_options=parse_options,
    supports_mock=True,
))
