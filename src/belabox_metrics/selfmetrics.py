"""The agent's own metrics, without prometheus_client (~14 MB RSS on import).

Counters live where the work happens (collection loop, uploader, housekeeping); this module
reads them when asked and renders them two ways: Prometheus text for ``/metrics``, and
samples stored like any other metric so they reach VictoriaMetrics with the rest.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from belabox_metrics.model import Labels, Sample, make_labels
from belabox_metrics.naming import number, promql_label, promql_name


def written_bytes(io_path: str = "/proc/self/io") -> int | None:
    """Bytes this process made the kernel write to storage (``write_bytes`` of /proc/self/io:
    page-cache pages it dirtied, each time again after they were written, and direct I/O).
    On an SD card or eMMC this is the wear the agent causes. None where the kernel does not
    say (macOS, a kernel without task I/O accounting)."""
    try:
        with open(io_path, "rb") as io:
            for line in io:
                if line.startswith(b"write_bytes:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


DURATION_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class Histogram:
    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self.count += 1
            self.sum += value
            for index, bound in enumerate(self.buckets):
                if value <= bound:
                    self.counts[index] += 1

    def snapshot(self) -> tuple[list[tuple[float, int]], int, float]:
        with self._lock:
            return list(zip(self.buckets, self.counts, strict=True)), self.count, self.sum


@dataclass(frozen=True)
class Family:
    name: str          # dotted, like every sample name; rendered with promql_name
    kind: str          # counter | gauge | histogram
    help: str
    values: Sequence[tuple[Labels, float]] = ()
    histograms: Sequence[tuple[Labels, Histogram]] = ()


@dataclass
class SelfMetrics:
    """A registry of callables that produce families from live agent state."""

    sources: list[Callable[[], Iterable[Family]]] = field(default_factory=list)

    def add(self, source: Callable[[], Iterable[Family]]) -> None:
        self.sources.append(source)

    def families(self) -> list[Family]:
        out: list[Family] = []
        for source in self.sources:
            out.extend(source())
        return out

    def exposition(self) -> str:
        """Prometheus text format 0.0.4."""
        lines: list[str] = []
        for family in self.families():
            name = promql_name(family.name)
            lines.append(f"# HELP {name} {family.help}")
            lines.append(f"# TYPE {name} {family.kind}")
            for labels, value in family.values:
                lines.append(f"{name}{_labels(labels)} {_number(value)}")
            for labels, histogram in family.histograms:
                buckets, count, total = histogram.snapshot()
                for bound, bucket_count in buckets:
                    lines.append(f"{name}_bucket{_labels((*labels, ('le', number(bound))))} {bucket_count}")
                lines.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {count}")
                lines.append(f"{name}_sum{_labels(labels)} {_number(total)}")
                lines.append(f"{name}_count{_labels(labels)} {count}")
        return "\n".join(lines) + "\n"

    def samples(self, now_ms: int) -> list[Sample]:
        out: list[Sample] = []
        for family in self.families():
            for labels, value in family.values:
                if math.isfinite(value):
                    out.append(Sample(family.name, float(value), now_ms, labels))
            for labels, histogram in family.histograms:
                buckets, count, total = histogram.snapshot()
                for bound, bucket_count in buckets:
                    out.append(Sample(family.name + "_bucket", float(bucket_count), now_ms,
                                      make_labels(dict(labels), le=number(bound))))
                out.append(Sample(family.name + "_bucket", float(count), now_ms, make_labels(dict(labels), le="+Inf")))
                # Microseconds: VictoriaMetrics keeps ~15 significant digits, so a 17-digit sum
                # would come back different from what was stored (and fail `verify`).
                out.append(Sample(family.name + "_sum", round(total, 6), now_ms, labels))
                out.append(Sample(family.name + "_count", float(count), now_ms, labels))
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{promql_label(k)}="{_escape(v)}"' for k, v in labels) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return number(float(value))


class SelfMetricsCollector:
    """Stores the self-metrics as samples on their own interval."""

    def __init__(self, registry: SelfMetrics) -> None:
        self.registry = registry

    def collect(self, now_ms: int) -> list[Sample]:
        return self.registry.samples(now_ms)
