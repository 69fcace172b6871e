"""`cpu`: usage percent per core and for all cores, and the frequency of each cpufreq policy.

Usage comes from deltas of the /proc/stat time counters between two cycles, so the first
cycle after start reports no usage. busy = user + nice + system + irq + softirq + steal,
total = busy + idle + iowait (guest and guest_nice are already inside user and nice).
iowait alone may go down (the kernel estimates it while a core idles), so idle and iowait
are checked as one sum. Any other decrease (a wrap, a core that went offline and came back
with fresh counters) skips that core's sample once and counts it in
``cpu.counter_resets_total``. Cores that go offline (big.LITTLE hotplug) simply vanish.

"all" is computed from the per-core deltas of the cores present in both cycles, not from
the aggregate "cpu" line: that line sums every *possible* core and its idle time jumps
when a core goes offline, which would make the aggregate wrong exactly when hotplug
happens.

The frequency of each cpufreq policy (on an RK3588: policy0 = A55 cores 0-3, policy4 and
policy6 = the two A76 pairs) shows thermal throttling: ``scaling_max_freq`` drops when the
thermal framework caps a cluster, ``scaling_cur_freq`` follows.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from belabox_metrics.collectors.base import (
    CollectorContext,
    CollectorError,
    CollectorSpec,
    MetricSettings,
    register,
)
from belabox_metrics.collectors.host_counters import LabelCache, import_psutil
from belabox_metrics.collectors.procfs import FsRoot, KernelFile
from belabox_metrics.model import Sample
from belabox_metrics.validation import Reader

USAGE = "cpu.usage_percent"
FREQUENCY = "cpu.frequency_hertz"
FREQUENCY_MAX = "cpu.frequency_max_hertz"
RESETS = "cpu.counter_resets_total"
CPUFREQ_DIR = ("devices", "system", "cpu", "cpufreq")
# The set of cpufreq policies changes only with drivers loading; look again this often.
RESCAN_SECONDS = 300.0

# Field order in /proc/stat: user nice system idle iowait irq softirq steal guest guest_nice.
CpuTimes = tuple[float, ...]


def parse_proc_stat(text: str) -> dict[str, CpuTimes]:
    """The "cpu" lines of /proc/stat -> {"all" | "<n>": (user, nice, system, idle, iowait,
    irq, softirq, steal)}; fields an old kernel lacks are 0, guest fields are dropped."""
    times: dict[str, CpuTimes] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            if times:
                break  # the cpu lines come first; the long intr/softirq lines need no parsing
            continue
        fields = line.split()
        key = fields[0][3:] or "all"
        values = [int(v) for v in fields[1:9]]
        if len(values) < 8:
            values.extend([0] * (8 - len(values)))
        times[key] = tuple(values)
    return times


def parse_boot_time(text: str) -> int | None:
    """The ``btime`` line of /proc/stat (seconds since the epoch) or None."""
    start = text.find("\nbtime ")
    if start < 0:
        return None
    return int(text[start + 7:text.index("\n", start + 1)])


def split_busy_idle(times: Sequence[float]) -> tuple[tuple[float, ...], float]:
    """(user, nice, system, irq, softirq, steal), idle + iowait."""
    user, nice, system, idle, iowait, irq, softirq, steal = times[:8]
    return (user, nice, system, irq, softirq, steal), idle + iowait


def busy_total_delta(previous: Sequence[float], current: Sequence[float]) -> tuple[float, float] | None:
    """(busy delta, total delta) between two readings of one core, or None when a counter
    went backwards (then the core's sample is skipped and the baseline restarts)."""
    busy_prev, idle_prev = split_busy_idle(previous)
    busy_cur, idle_cur = split_busy_idle(current)
    busy = 0.0
    for p, c in zip(busy_prev, busy_cur, strict=True):
        if c < p:
            return None
        busy += c - p
    idle = idle_cur - idle_prev
    if idle < 0:
        return None
    return busy, busy + idle


def usage_percent(busy: float, total: float) -> float | None:
    """Busy share of the interval in percent; None when no time passed (no division by 0)."""
    if total <= 0:
        return None
    # Two decimals: a per-core percent has no more real precision, and 17-digit floats
    # would cost the uplink several times the bytes of the value they carry.
    return round(100.0 * busy / total, 2)


def parse_kilohertz(text: str) -> float:
    """A cpufreq file (kHz) -> Hz."""
    return int(text.strip()) * 1000.0


@dataclass(frozen=True)
class Options:
    per_core: bool = True
    frequency: bool = True


def parse_options(reader: Reader) -> Options:
    return Options(per_core=reader.boolean("per_core", True),
                   frequency=reader.boolean("frequency", True))


class CpuSource(Protocol):
    def times(self) -> dict[str, CpuTimes]: ...

    def frequencies(self, monotonic: float) -> list[tuple[str, float, float | None]]: ...


class ProcCpuSource:
    """/proc/stat and /sys/devices/system/cpu/cpufreq/policy*."""

    def __init__(self, fs: FsRoot) -> None:
        self.fs = fs
        self.stat = fs.open_proc("stat")
        self._policies: list[tuple[str, KernelFile, KernelFile]] = []
        self._scanned_at: float | None = None

    def times(self) -> dict[str, CpuTimes]:
        return parse_proc_stat(self.stat.read())

    def _scan(self) -> None:
        for _, cur, top in self._policies:
            cur.close()
            top.close()
        self._policies = [
            (name, self.fs.open_sys(*CPUFREQ_DIR, name, "scaling_cur_freq"),
             self.fs.open_sys(*CPUFREQ_DIR, name, "scaling_max_freq"))
            for name in self.fs.list_sys(*CPUFREQ_DIR) if name.startswith("policy")
        ]

    def frequencies(self, monotonic: float) -> list[tuple[str, float, float | None]]:
        if self._scanned_at is None or monotonic - self._scanned_at >= RESCAN_SECONDS:
            self._scan()
            self._scanned_at = monotonic
        out: list[tuple[str, float, float | None]] = []
        for name, cur, top in self._policies:
            try:
                hertz = parse_kilohertz(cur.read())
            except (OSError, ValueError):
                # EBUSY: every core of the cluster is offline. Not an error, no value.
                continue
            try:
                top_hertz: float | None = parse_kilohertz(top.read())
            except (OSError, ValueError):
                top_hertz = None
            out.append((name, hertz, top_hertz))
        return out


class PsutilCpuSource:
    """macOS: psutil's per-core times (user, nice, system, idle) and one overall frequency."""

    def __init__(self) -> None:
        psutil = import_psutil()

        self.psutil = psutil

    def times(self) -> dict[str, CpuTimes]:
        out: dict[str, CpuTimes] = {}
        for index, t in enumerate(self.psutil.cpu_times(percpu=True)):
            out[str(index)] = (
                t.user, t.nice, t.system, t.idle, getattr(t, "iowait", 0.0),
                getattr(t, "irq", 0.0), getattr(t, "softirq", 0.0), getattr(t, "steal", 0.0),
            )
        return out

    def frequencies(self, monotonic: float) -> list[tuple[str, float, float | None]]:
        try:
            freq = self.psutil.cpu_freq()
        except (OSError, RuntimeError, NotImplementedError):
            return []
        if not freq or not freq.current:
            return []
        return [("all", freq.current * 1e6, freq.max * 1e6 if freq.max else None)]


class CpuCollector:
    def __init__(self, settings: MetricSettings, ctx: CollectorContext,
                 source: CpuSource | None = None) -> None:
        self.ctx = ctx
        self.options: Options = settings.options or Options()
        if source is None:
            source = PsutilCpuSource() if sys.platform == "darwin" else ProcCpuSource(ctx.fs)
        self.source = source
        self._previous: dict[str, CpuTimes] = {}
        self.resets = 0
        self._cpu_labels = LabelCache("cpu")
        self._policy_labels = LabelCache("policy")

    def collect(self, now_ms: int) -> list[Sample]:
        try:
            current = self.source.times()
        except (OSError, ValueError) as exc:
            raise CollectorError(f"cannot read CPU times: {exc}") from exc
        current.pop("all", None)
        if not current:
            raise CollectorError("no per-core lines in /proc/stat")
        samples: list[Sample] = []
        previous = self._previous
        busy_all = total_all = 0.0
        have_all = False
        for core, times in current.items():
            before = previous.get(core)
            if before is None:
                continue  # first cycle, or the core just came online
            delta = busy_total_delta(before, times)
            if delta is None:
                self.resets += 1
                continue
            busy, total = delta
            busy_all += busy
            total_all += total
            have_all = True
            if self.options.per_core:
                percent = usage_percent(busy, total)
                if percent is not None:
                    samples.append(Sample(USAGE, percent, now_ms, self._cpu_labels(core)))
        # Cores absent now (offline) drop out of the baseline here.
        self._previous = current
        if have_all:
            percent = usage_percent(busy_all, total_all)
            if percent is not None:
                samples.append(Sample(USAGE, percent, now_ms, self._cpu_labels("all")))
        if self.options.frequency:
            for policy, hertz, top in self.source.frequencies(self.ctx.clock.monotonic()):
                labels = self._policy_labels(policy)
                samples.append(Sample(FREQUENCY, hertz, now_ms, labels))
                if top is not None:
                    samples.append(Sample(FREQUENCY_MAX, top, now_ms, labels))
        samples.append(Sample(RESETS, float(self.resets), now_ms))
        return samples


SPEC = register(CollectorSpec(
    name="cpu",
    factory=CpuCollector,
    description="CPU usage percent per core and overall (from /proc/stat deltas) and the "
                "frequency of each cpufreq policy",
    default_interval=5.0,
    parse_options=parse_options,
))
