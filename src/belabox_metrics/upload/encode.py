"""Wire formats, kept apart from the model they format.

``json`` (seed): the Milestone 1 payload that ``metrics-receiver`` accepts::

    {"device_id": "belabox-001", "timestamp": "2025-10-11T14:30:00.123Z",
     "metrics": [{"name": "cpu.temperature", "value": 52.3,
                  "timestamp": "2025-10-11T14:30:00.123Z", "labels": {"zone": "soc-thermal"}}]}

``vm-jsonl``: VictoriaMetrics ``/api/v1/import``, one line per series with its samples::

    {"metric":{"__name__":"cpu_temperature_celsius","device_id":"belabox-001","zone":"soc"},
     "values":[52.3,52.4],"timestamps":[1760193000123,1760193001123]}

``remote-write``: Prometheus remote write (protobuf + snappy) for VictoriaMetrics'
``/api/v1/write`` or any remote-write receiver; see ``remote_write.py``.

``json`` and ``vm-jsonl`` are gzip-compressed (``remote.compression_level``, default
``GZIP_LEVEL``), ``remote-write`` snappy-compressed: each WireFormat owns its compression and
content encoding. Only finite numeric samples are ever put on the wire; the uploader filters
before encoding.

The uploader hands a format the rows as the store keeps them, ``(ts, series_id, value)``,
with the catalogue their series ids come from
(``WireFormat.body_rows``). ``vm-jsonl`` encodes those directly (``VmRowEncoder``: grouped by
series id, each series' line head cached by its id); the other formats build
Samples from them first. At thousands of series a claim is ten thousand rows, and a Sample
and a Row object per row were a third of the upload thread's CPU.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, cast

from belabox_metrics.model import Labels, Sample
from belabox_metrics.naming import (  # noqa: F401 - re-exported for callers of the old home
    PROMQL_NAMES,
    RESERVED_LABELS,
    number,
    promql_label,
    promql_name,
)
from belabox_metrics.timefmt import format_ms
from belabox_metrics.upload.series import SeriesHeads, series_labels  # noqa: F401 - re-exported

SEED_JSON_CONTENT_TYPE = "application/json"
RawRow = tuple[int, int, object]  # (ts, series_id, value) as the store keeps a sample
TEXT_SERIES = 1  # the value type of a text series (store/series.py TEXT): never sent
# The default of remote.compression_level. Against level 1: 10 % fewer bytes online, 19 % fewer
# for a backlog, for ~0.2 µs more CPU per sample, which the bandwidth budget bounds (bench_wire).
GZIP_LEVEL = 6

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


class VmSeriesHeads(SeriesHeads[str]):
    """The `{"metric":{...}` head of each series' line."""

    def build(self, metric: dict[str, str]) -> str:
        return '{"metric":' + json.dumps(metric, separators=(",", ":"), ensure_ascii=False)


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


class SeriesSource(Protocol):
    """What a row encoder asks about a series id: the store's catalogue (store/series.py)."""

    def series(self, series_id: int) -> tuple[str, Labels, int]: ...  # (name, labels, value type)


class VmRowEncoder:
    """``vm_jsonl`` of stored rows, byte for byte what it makes of their Samples.

    Grouped by series id (one id per (name, labels) of a numeric series), lines in the order
    each series first appears. Each series' line head (``{"metric":{...},"values":[``) is
    cached by its id for the catalogue it came from (ids are that database's; another
    catalogue starts a new cache). Values and timestamps are formatted as they are grouped:
    at thousands of series a request carries one or two samples per series, so what costs is
    per series, not per sample. The uploader passes only finite float values; a text series'
    rows are left out (text is never sent)."""

    def __init__(self, heads: VmSeriesHeads) -> None:
        self.heads = heads
        self._source: SeriesSource | None = None
        self._by_id: dict[int, str | None] = {}

    def encode(self, rows: Sequence[RawRow], source: SeriesSource) -> bytes:
        if source is not self._source:
            self._source, self._by_id = source, {}
        grouped: dict[int, list[Any]] = {}  # id -> [values text, timestamps text, last ts]
        get = grouped.get
        # A round's samples share a timestamp: each one's text is made once per body.
        stamp_texts: dict[int, str] = {}
        stamp_of = stamp_texts.get
        unsorted: set[int] = set()
        for ts, sid, v in cast("Sequence[tuple[int, int, float]]", rows):  # finite floats (the uploader's check)
            # naming.number inline, line for line (a call per value was a tenth of the encoding).
            if v.is_integer() and -1e15 < v < 1e15:
                text = str(int(v))
            else:
                text = repr(v)
                if len(text) > 13:
                    text = repr(float(f"{v:.12g}"))
            stamp = stamp_of(ts)
            if stamp is None:
                stamp = stamp_texts[ts] = str(ts)
            group = get(sid)
            if group is None:
                grouped[sid] = [text, stamp, ts]
                continue
            if ts < group[2]:
                unsorted.add(sid)
            group[0] += "," + text
            group[1] += "," + stamp
            group[2] = ts
        if unsorted:
            self._sort(rows, grouped, unsorted)
        heads, by_id = self._by_id, self._line_head
        parts: list[str] = []
        extend = parts.extend
        for sid, (values, stamps, _) in grouped.items():
            head = heads.get(sid, "")
            if head == "":
                head = by_id(sid, source)
            if head is not None:
                extend((head, values, '],"timestamps":[', stamps, "]}\n"))
        return ("".join(parts) or "\n").encode()

    def _line_head(self, sid: int, source: SeriesSource) -> str | None:
        name, labels, value_type = source.series(sid)
        head = None if value_type == TEXT_SERIES else self.heads.head(name, labels) + ',"values":['
        self._by_id[sid] = head
        return head

    @staticmethod
    def _sort(rows: Sequence[RawRow], grouped: dict[int, list[Any]], unsorted: set[int]) -> None:
        """Series whose rows came out of time order (late rows ahead of a lane's)."""
        pairs: dict[int, list[tuple[int, float]]] = {sid: [] for sid in unsorted}
        for ts, sid, v in rows:
            if sid in pairs:
                pairs[sid].append((ts, v))  # type: ignore[arg-type]
        for sid, found in pairs.items():
            found.sort()
            grouped[sid][0] = ",".join(map(number, [v for _, v in found]))
            grouped[sid][1] = ",".join([str(ts) for ts, _ in found])


def gzip_bytes(body: bytes, level: int = GZIP_LEVEL) -> bytes:
    # One gzip member with mtime 0 (the same chunk compresses to the same bytes: repeatable
    # sizes in benchmarks), as gzip.compress(body, level, mtime=0) makes it since Python 3.12;
    # zlib alone, without the gzip module and _compression (issue 16).
    packer = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    return packer.compress(body) + packer.flush()


@dataclass(frozen=True)
class WireFormat:
    """A format owns its encoding, its compression and the headers that describe both."""

    name: str
    content_type: str
    # encode(samples, sent_at_ms) -> uncompressed body
    encode: Callable[[Sequence[Sample], int], bytes]
    compress: Callable[[bytes], bytes] = gzip_bytes
    content_encoding: str = "gzip"
    headers: Mapping[str, str] = field(default_factory=dict)  # more request headers
    # encode_rows(rows, source, sent_at_ms) -> the same body as encode of their Samples
    # (None: body_rows builds the Samples and calls encode)
    encode_rows: Callable[[Sequence[RawRow], SeriesSource, int], bytes] | None = None

    def body(self, samples: Sequence[Sample], sent_at_ms: int) -> bytes:
        """The request body: encoded, then compressed."""
        return self.compress(self.encode(samples, sent_at_ms))

    def body_rows(self, rows: Sequence[RawRow], source: SeriesSource, sent_at_ms: int) -> bytes:
        """The request body for stored rows (``source``: the catalogue their ids are from):
        what ``body`` makes of their Samples."""
        if self.encode_rows is not None:
            return self.compress(self.encode_rows(rows, source, sent_at_ms))
        return self.body(samples_of(rows, source), sent_at_ms)


def samples_of(rows: Sequence[RawRow], source: SeriesSource) -> list[Sample]:
    """The Samples of stored rows (the formats without a row encoder)."""
    out = []
    for ts, sid, value in rows:
        name, labels, value_type = source.series(sid)
        if value_type == TEXT_SERIES:
            out.append(Sample(name, None, ts, labels, None if value is None else str(value)))
        else:
            out.append(Sample(name, math.nan if value is None else float(value), ts, labels))  # type: ignore[arg-type]
    return out


def wire_format(name: str, device_id: str, compression_level: int | None = None) -> WireFormat:
    """``compression_level``: gzip's 1-9 for json and vm-jsonl (None: GZIP_LEVEL); snappy
    (remote-write) has no levels."""
    level = GZIP_LEVEL if compression_level is None else compression_level
    gzip_at_level: Callable[[bytes], bytes] = gzip_bytes if level == GZIP_LEVEL else partial(gzip_bytes, level=level)
    if name == "json":
        return WireFormat("json", SEED_JSON_CONTENT_TYPE,
                          lambda samples, now_ms: seed_json(device_id, samples, now_ms), gzip_at_level)
    if name == "vm-jsonl":
        heads = VmSeriesHeads(device_id)
        row_encoder = VmRowEncoder(heads)
        return WireFormat("vm-jsonl", "application/x-ndjson", lambda samples, now_ms: vm_jsonl(heads, samples),
                          gzip_at_level,
                          encode_rows=lambda rows, source, now_ms: row_encoder.encode(rows, source))
    if name == "remote-write":
        from belabox_metrics.upload import remote_write

        series = remote_write.RemoteWriteSeries(device_id)
        return WireFormat("remote-write", remote_write.CONTENT_TYPE,
                          lambda samples, now_ms: remote_write.write_request(series, samples),
                          remote_write.snappy_compressor(), remote_write.CONTENT_ENCODING,
                          remote_write.VERSION_HEADERS)
    raise ValueError(f"unknown wire format {name!r}")
