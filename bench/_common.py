"""What the store, drain and wire benchmarks share: a BELABOX-like metric set, RSS readings,
a real VictoriaMetrics on loopback, and figure printing.

The metric set is the default host collectors on an RK3588 (8 cores, 3 cpufreq policies,
7 thermal zones, one eMMC, two uplinks) plus a few SRT series: 65 series. Values are made
the way the collectors make them (usage from integer jiffy deltas, rates as a counter delta
over a monotonic interval, temperatures in millidegrees / 1000), because the number of
digits a value has decides how well it compresses on disk and on the wire.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from belabox_metrics.model import Labels, Sample, make_labels

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # tests.vm is imported from the repo root
    sys.path.insert(0, str(REPO_ROOT))

DEVICE_ID = "belabox-bench"


@dataclass
class SeriesModel:
    """One series and how its next value is made; ``interval_s`` is its collection interval."""

    name: str
    labels: Labels
    interval_s: float
    kind: str  # usage | freq | bytes | counter | rate | celsius | load | uptime | boot | ratio | ms
    state: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def next_value(self, rng: random.Random) -> float:
        kind = self.kind
        if kind == "usage":  # 100 * busy / total, integer jiffies at 100 Hz
            total = int(100 * self.interval_s * self.extra.get("cores", 1))
            return 100.0 * rng.randint(0, total // 2) / total
        if kind == "freq":
            return float(rng.choice((408_000, 816_000, 1_200_000, 1_608_000, 1_800_000, 2_256_000)) * 1000)
        if kind == "bytes":  # meminfo kB * 1024, drifting
            self.state = max(1024.0, self.state + rng.randint(-2048, 2048) * 1024)
            return self.state
        if kind == "counter":
            self.state += rng.randint(0, int(self.extra.get("step", 1000)))
            return float(self.state)
        if kind == "rate":  # counter delta / monotonic interval
            elapsed = self.interval_s + rng.uniform(-0.002, 0.002)
            return rng.randint(0, int(self.extra.get("step", 1000))) / elapsed
        if kind == "celsius":  # m°C / 1000, RK3588 steps of ~1 m°C
            self.state = min(95_000.0, max(30_000.0, self.state + rng.randint(-462, 462)))
            return int(self.state) / 1000.0
        if kind == "load":  # /proc/loadavg: two decimals
            self.state = max(0.0, round(self.state + rng.uniform(-0.05, 0.05), 2))
            return self.state
        if kind == "uptime":  # /proc/uptime: two decimals
            self.state = round(self.state + self.interval_s + rng.uniform(-0.01, 0.01), 2)
            return self.state
        if kind == "boot":  # wall - uptime: a full-precision float wobbling by ms
            return 1_760_000_000.0 + rng.uniform(-0.005, 0.005)
        if kind == "ratio":  # 100 * lost / sent
            return 100.0 * rng.randint(0, 20) / rng.randint(900, 1100)
        if kind == "ms":  # milliseconds / 1000
            return rng.randint(20, 400) / 1000.0
        raise ValueError(kind)


def belabox_series(copies: int = 1) -> list[SeriesModel]:
    """The 65-series BELABOX set; ``copies`` > 1 multiplies it (a ``copy`` label) to scale."""
    out: list[SeriesModel] = []
    for copy in range(copies):
        extra_label = {"copy": str(copy)} if copies > 1 else {}

        def add(name: str, interval: float, kind: str, state: float = 0.0, extra: dict[str, float] | None = None,
                extra_label: dict[str, str] = extra_label, **labels: str) -> None:
            out.append(SeriesModel(name, make_labels({**labels, **extra_label}), interval, kind, state, extra or {}))

        for core in [*map(str, range(8)), "all"]:
            add("cpu.usage_percent", 5, "usage", extra={"cores": 8 if core == "all" else 1}, cpu=core)
        for policy in ("policy0", "policy4", "policy6"):
            add("cpu.frequency_hertz", 5, "freq", policy=policy)
            add("cpu.frequency_max_hertz", 5, "freq", policy=policy)
        for name, start in (("total", 16e9), ("available", 12e9), ("used", 4e9), ("swap_total", 8e9),
                            ("swap_used", 1e8)):
            add(f"memory.{name}_bytes", 10, "bytes", start)
        for name, step in (("reads_total", 50), ("writes_total", 200), ("read_bytes_total", 400_000),
                           ("written_bytes_total", 2_000_000)):
            add(f"disk.{name}", 10, "counter", 1e6, {"step": step}, device="mmcblk0")
        add("disk.io_time_seconds_total", 10, "uptime", 5000.0, device="mmcblk0")
        for name, step in (("reads_per_second", 50), ("writes_per_second", 200),
                           ("read_bytes_per_second", 400_000), ("written_bytes_per_second", 2_000_000)):
            add(f"disk.{name}", 10, "rate", extra={"step": step}, device="mmcblk0")
        for interface in ("eth0", "usb0"):
            for direction in ("receive", "transmit"):
                big = 8_000_000 if direction == "transmit" else 400_000
                for name, step in (("bytes_total", big), ("packets_total", big // 1200), ("errors_total", 1),
                                   ("drops_total", 2)):
                    add(f"network.{direction}_{name}", 5, "counter", 1e9, {"step": step}, interface=interface)
                add(f"network.{direction}_bytes_per_second", 5, "rate", extra={"step": big}, interface=interface)
        for zone in ("soc-thermal", "bigcore0-thermal", "bigcore1-thermal", "littlecore-thermal",
                     "center-thermal", "gpu-thermal", "npu-thermal"):
            add("thermal.zone_celsius", 10, "celsius", 55_000.0, zone=zone)
        add("system.load1", 30, "load", 1.5)
        add("system.load5", 30, "load", 1.4)
        add("system.load15", 30, "load", 1.3)
        add("system.uptime_seconds", 30, "uptime", 86_400.0)
        add("system.boot_time_seconds", 30, "boot")
        add("srt.packet_loss", 1, "ratio", source="srtla", stream="live")
        add("srt.rtt_seconds", 1, "ms", source="srtla", stream="live")
        add("srt.send_rate_bits_per_second", 1, "rate", extra={"step": 6_000_000}, source="srtla", stream="live")
        add("srt.buffer_seconds", 1, "ms", source="srtla", stream="live")
    return out


def rounds(series: list[SeriesModel], total: int, start_ms: int, step_ms: int = 1000,
           seed: int = 1) -> Iterator[list[Sample]]:
    """Collection rounds of every series at one timestamp, ``step_ms`` apart, ``total`` samples
    in all (the last round may be partial)."""
    rng = random.Random(seed)
    made = 0
    ts = start_ms
    while made < total:
        batch = [Sample(m.name, m.next_value(rng), ts, m.labels) for m in series[: total - made]]
        made += len(batch)
        ts += step_ms
        yield batch


def timeline(series: list[SeriesModel], seconds: int, start_ms: int, seed: int = 1) -> list[Sample]:
    """Every sample each series collects at its own interval over ``seconds``, in time order."""
    rng = random.Random(seed)
    out: list[Sample] = []
    for second in range(seconds):
        ts = start_ms + second * 1000
        for m in series:
            if second % int(m.interval_s) == 0:
                out.append(Sample(m.name, m.next_value(rng), ts, m.labels))
    return out


# -- memory ----------------------------------------------------------------------------
def status_kb(field_name: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Peak VmRSS seen by a thread reading /proc/self/status every ``period`` seconds."""

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.before_kb = status_kb("VmRSS")
        self.peak_kb = self.before_kb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.peak_kb = max(self.peak_kb, status_kb("VmRSS"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak_kb = max(self.peak_kb, status_kb("VmRSS"))

    @property
    def growth_mb(self) -> float:
        return (self.peak_kb - self.before_kb) / 1024


def count_exported(vm: Any, device_id: str) -> int:
    """Samples a tests.vm.VictoriaMetrics holds for one device_id (export, after a flush)."""
    lines: list[dict[str, list[object]]] = vm.export(f'{{device_id="{device_id}"}}')
    return sum(len(line["timestamps"]) for line in lines)


def count_settled(vm: Any, device_id: str, expected: int, timeout_s: float = 30.0) -> tuple[int, int, float]:
    """(first count, final count, seconds until the count reached ``expected`` or stopped
    growing): right after the last 204, an export has been seen to miss whole requests
    (see docs/benchmarks.md), so the count is read again until it settles."""
    started = time.monotonic()
    first = last = count_exported(vm, device_id)
    while last != expected and time.monotonic() - started < timeout_s:
        time.sleep(1.0)
        now = count_exported(vm, device_id)
        if now == last and time.monotonic() - started > 5:
            break
        last = now
    return first, last, time.monotonic() - started


# -- files -----------------------------------------------------------------------------
def db_bytes(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal", path + "-shm") if os.path.exists(p))


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=prefix)


# -- output ----------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (what docs/benchmarks.md quotes)."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def now_ms() -> int:
    return int(time.time() * 1000)
