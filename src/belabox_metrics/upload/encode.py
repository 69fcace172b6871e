"""Wire formats, kept apart from the model they format.

``json`` (seed): the Milestone 1 payload that ``metrics-receiver`` accepts::

    {"device_id": "belabox-001", "timestamp": "2025-10-11T14:30:00.123Z",
     "metrics": [{"name": "cpu.temperature", "value": 52.3,
                  "timestamp": "2025-10-11T14:30:00.123Z", "labels": {"zone": "soc-thermal"}}]}

``vm-jsonl``: VictoriaMetrics ``/api/v1/import``, one line per series with its samples::

    {"metric":{"__name__":"cpu_temperature_celsius","device_id":"belabox-001","zone":"soc"},
     "values":[52.3,52.4],"timestamps":[1760193000123,1760193001123]}

Both are gzip-compressed (level 1: cheap on an ARM core, most of the gain). Only finite
numeric samples are ever put on the wire; the uploader filters before encoding.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from belabox_metrics.model import Labels, Sample
from belabox_metrics.timefmt import format_ms

SEED_JSON_CONTENT_TYPE = "application/json"
GZIP_LEVEL = 1

# Seed metric names that carry no unit: their PromQL names get one.
PROMQL_NAMES = {
    "cpu.temperature": "cpu_temperature_celsius",
    "srt.packet_loss": "srt_packet_loss_percent",
}
# Spelling variants of unit suffixes -> the Prometheus base-unit suffix.
UNIT_SUFFIXES = (
    ("_pct", "_percent"), ("_percentage", "_percent"), ("_degc", "_celsius"),
    ("_degrees_celsius", "_celsius"), ("_secs", "_seconds"), ("_sec", "_seconds"),
    ("_byte", "_bytes"), ("_count_total", "_total"),
)
_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")
RESERVED_LABELS = ("__name__", "device_id")


def promql_name(name: str) -> str:
    """'cpu.usage_percent' -> 'cpu_usage_percent'; always a valid PromQL metric name."""
    if name in PROMQL_NAMES:
        return PROMQL_NAMES[name]
    out = _INVALID_NAME.sub("_", name)
    for variant, canonical in UNIT_SUFFIXES:
        if out.endswith(variant):
            out = out[: -len(variant)] + canonical
            break
    if not out or out[0].isdigit():
        out = "_" + out
    return out


def promql_label(name: str) -> str:
    out = _INVALID_LABEL.sub("_", name)
    if not out or out[0].isdigit():
        out = "_" + out
    if out in RESERVED_LABELS:
        out = "tag_" + out  # a sample label never overrides the device identity
    return out


def number(value: float) -> str:
    """Shortest text for a float at the precision VictoriaMetrics keeps (12 significant
    digits): 46.0 -> '46', 0.30000000000000004 -> '0.3', 3.5999999999999994e-05 -> '3.6e-05'.
    More digits would only cost bytes and then differ from what VM stores."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(f"{value:.12g}"))


def seed_metric(sample: Sample) -> dict[str, object]:
    item: dict[str, object] = {
        "name": sample.name,
        "value": sample.value,
        "timestamp": format_ms(sample.timestamp_ms),
    }
    if sample.labels:
        item["labels"] = dict(sample.labels)
    return item


def seed_json(device_id: str, samples: Sequence[Sample], sent_at_ms: int) -> bytes:
    payload = {
        "device_id": device_id,
        "timestamp": format_ms(sent_at_ms),
        "metrics": [seed_metric(s) for s in samples],
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class VmSeriesHeads:
    """Caches the `{"metric":{...}` head of each series' line: built once per series."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._heads: dict[tuple[str, Labels], str] = {}

    def head(self, name: str, labels: Labels) -> str:
        key = (name, labels)
        found = self._heads.get(key)
        if found is None:
            metric = {"__name__": promql_name(name), "device_id": self.device_id}
            for label, value in labels:
                metric[promql_label(label)] = value
            found = '{"metric":' + json.dumps(metric, separators=(",", ":"), ensure_ascii=False)
            self._heads[key] = found
        return found


def vm_jsonl(heads: VmSeriesHeads, samples: Sequence[Sample]) -> bytes:
    """One JSON line per series, samples in timestamp order within it. The uploader passes
    rows in (timestamp, series) order, so a series is sorted only if it arrives out of order."""
    grouped: dict[tuple[str, Labels], tuple[list[int], list[float]]] = {}
    unsorted: set[tuple[str, Labels]] = set()
    for s in samples:
        key = (s.name, s.labels)
        group = grouped.get(key)
        if group is None:
            group = grouped[key] = ([], [])
        elif s.timestamp_ms < group[0][-1]:
            unsorted.add(key)
        group[0].append(s.timestamp_ms)
        group[1].append(s.value)  # type: ignore[arg-type]
    lines = []
    for key, (stamps, values) in grouped.items():
        if key in unsorted:
            pairs = sorted(zip(stamps, values, strict=True))
            stamps, values = [p[0] for p in pairs], [p[1] for p in pairs]
        lines.append(f'{heads.head(*key)},"values":[{",".join(map(number, values))}],'
                     f'"timestamps":[{",".join(map(str, stamps))}]}}')
    return ("\n".join(lines) + "\n").encode()


def gzip_bytes(body: bytes) -> bytes:
    # mtime=0: the same chunk compresses to the same bytes (repeatable sizes in benchmarks).
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


@dataclass(frozen=True)
class WireFormat:
    name: str
    content_type: str
    # encode(samples, sent_at_ms) -> uncompressed body
    encode: Callable[[Sequence[Sample], int], bytes]


def wire_format(name: str, device_id: str) -> WireFormat:
    if name == "json":
        return WireFormat("json", SEED_JSON_CONTENT_TYPE,
                          lambda samples, now_ms: seed_json(device_id, samples, now_ms))
    if name == "vm-jsonl":
        heads = VmSeriesHeads(device_id)
        return WireFormat("vm-jsonl", "application/x-ndjson", lambda samples, now_ms: vm_jsonl(heads, samples))
    raise ValueError(f"unknown wire format {name!r}")
