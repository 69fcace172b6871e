"""Prometheus remote write 1.0: a protobuf ``WriteRequest``, snappy-compressed (block format).

The schema is tiny, so it is encoded here by hand instead of importing the ``protobuf``
package (5.5 MB of RSS for the runtime and a generated message class)::

    message WriteRequest { repeated TimeSeries timeseries = 1; }
    message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    message Label        { string name = 1; string value = 2; }
    message Sample       { double value = 1; int64 timestamp = 2; }

Fields are written in number order and proto3 defaults (0.0, 0) are left out, which is what
the protobuf runtime writes, byte for byte. Labels are the vm-jsonl ones (``promql_name``,
``device_id``, ``promql_label``), sorted by name in byte order as the remote-write spec
requires (``__name__`` comes first unless a label name starts with an upper-case letter, a
digit or ``_`` + digit); each series' samples are in timestamp order.

Snappy comes from ``cramjam`` (the optional extra ``belabox-metrics[remote-write]``), imported
only when this format is configured: it costs ~2.2 MB of RSS.
"""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Callable, Sequence

from belabox_metrics.model import Labels, Sample
from belabox_metrics.upload.series import SeriesHeads

CONTENT_TYPE = "application/x-protobuf"
CONTENT_ENCODING = "snappy"
# Sent by every remote-write client; receivers use it to tell 1.0 from later versions.
VERSION_HEADERS = {"X-Prometheus-Remote-Write-Version": "0.1.0"}
INSTALL_HINT = "pip install 'belabox-metrics[remote-write]'"

_DOUBLE = struct.Struct("<d").pack
_NEGATIVE_ZERO = _DOUBLE(-0.0)


def varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 is its 64-bit two's complement (10 bytes)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_bytes(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte (field number << 3 | 2), length, payload."""
    return bytes((tag,)) + varint(len(payload)) + payload


def label_bytes(labels: Sequence[tuple[str, str]]) -> bytes:
    """The ``labels`` fields (1) of a TimeSeries, in the order given."""
    return b"".join(field_bytes(0x0A, field_bytes(0x0A, name.encode()) + field_bytes(0x12, value.encode()))
                    for name, value in labels)


def sample_bytes(value: float, timestamp_ms: int, stamps: dict[int, bytes] | None = None) -> bytes:
    """One ``samples`` field (2) of a TimeSeries. ``stamps`` caches encoded timestamps: the
    series collected together share them."""
    body = b""
    packed = _DOUBLE(value)
    if value != 0.0 or packed == _NEGATIVE_ZERO:
        body = b"\x09" + packed
    if timestamp_ms:
        encoded = stamps.get(timestamp_ms) if stamps is not None else None
        if encoded is None:
            encoded = b"\x10" + varint(timestamp_ms)
            if stamps is not None:
                stamps[timestamp_ms] = encoded
        body += encoded
    return b"\x12" + bytes((len(body),)) + body  # at most 9 + 11 bytes: one length byte


class RemoteWriteSeries(SeriesHeads[bytes]):
    """Each series' encoded labels (its TimeSeries head), sorted by name."""

    def build(self, metric: dict[str, str]) -> bytes:
        return label_bytes(sorted(metric.items()))


def write_request(heads: RemoteWriteSeries, samples: Sequence[Sample]) -> bytes:
    """The uncompressed WriteRequest: one TimeSeries per series, samples in timestamp order."""
    grouped: dict[tuple[str, Labels], list[tuple[int, float]]] = {}
    unsorted: set[tuple[str, Labels]] = set()
    for s in samples:
        key = (s.name, s.labels)
        group = grouped.get(key)
        if group is None:
            group = grouped[key] = []
        elif s.timestamp_ms < group[-1][0]:
            unsorted.add(key)
        group.append((s.timestamp_ms, s.value))  # type: ignore[arg-type]
    stamps: dict[int, bytes] = {}
    out = []
    for key, points in grouped.items():
        if key in unsorted:
            points.sort(key=lambda point: point[0])
        series = heads.head(*key) + b"".join([sample_bytes(v, ts, stamps) for ts, v in points])
        out.append(field_bytes(0x0A, series))
    return b"".join(out)


def snappy_missing() -> bool:
    """True when the snappy codec (cramjam) is not installed; finds it without importing it."""
    return importlib.util.find_spec("cramjam") is None


def snappy_compressor() -> Callable[[bytes], bytes]:
    """Snappy block compression (what remote write uses; not the framed stream format)."""
    try:
        import cramjam
    except ImportError:
        raise RuntimeError(f"remote.format remote-write needs the cramjam package: {INSTALL_HINT}") from None
    compress_raw = cramjam.snappy.compress_raw

    def compress(body: bytes) -> bytes:
        return bytes(compress_raw(body))

    return compress
