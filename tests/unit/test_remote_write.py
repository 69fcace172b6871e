"""The remote-write encoder (protobuf by hand + snappy), checked three ways: a hand-worked
example byte by byte, bytes the real ``protobuf`` runtime wrote for a richer request, and a
small protobuf decoder of our own over random samples."""

from __future__ import annotations

import gzip
import math
import struct
import sys
from collections.abc import Iterator

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from belabox_metrics.config import parse_config
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.upload.encode import (
    GZIP_LEVEL,
    VmSeriesHeads,
    gzip_bytes,
    promql_label,
    promql_name,
    vm_jsonl,
    wire_format,
)
from belabox_metrics.upload.remote_write import (
    RemoteWriteSeries,
    field_bytes,
    label_bytes,
    sample_bytes,
    varint,
    write_request,
)
from belabox_metrics.validation import ConfigError

# -- a protobuf wire decoder, just enough for WriteRequest ------------------------------


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) for each field: varints as int, fixed64 as 8 raw bytes,
    length-delimited as bytes."""
    at = 0
    while at < len(data):
        key, at = read_varint(data, at)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, at = read_varint(data, at)
            yield number, value
        elif wire_type == 1:
            yield number, data[at:at + 8]
            at += 8
        elif wire_type == 2:
            length, at = read_varint(data, at)
            yield number, data[at:at + length]
            at += length
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
    assert at == len(data)


Decoded = list[tuple[list[tuple[str, str]], list[tuple[float, int]]]]


def decode(body: bytes) -> Decoded:
    out: Decoded = []
    for number, series in fields(body):
        assert number == 1 and isinstance(series, bytes)
        labels: list[tuple[str, str]] = []
        samples: list[tuple[float, int]] = []
        for inner, payload in fields(series):
            assert isinstance(payload, bytes)
            parts = dict(fields(payload))
            if inner == 1:
                labels.append((bytes(parts.get(1, b"")).decode(), bytes(parts.get(2, b"")).decode()))  # type: ignore[arg-type]
            else:
                assert inner == 2 and set(parts) <= {1, 2}
                value = struct.unpack("<d", parts[1])[0] if 1 in parts else 0.0  # type: ignore[arg-type]
                stamp = int(parts.get(2, 0))  # type: ignore[arg-type]
                samples.append((value, stamp - (1 << 64) if stamp >= 1 << 63 else stamp))
        out.append((labels, samples))
    return out


# -- the encoding ----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"),
    (1_760_193_000_123, "bbe5b69d9d33"), (-1, "ff" * 9 + "01")])
def test_varint(value: int, expected: str) -> None:
    assert varint(value).hex() == expected
    assert read_varint(varint(value), 0) == (value % (1 << 64), len(expected) // 2)


def test_hand_worked_example() -> None:
    # WriteRequest{timeseries: [{labels: [{__name__, "x"}], samples: [{1.5, 1000}]}]}
    series = label_bytes([("__name__", "x")]) + sample_bytes(1.5, 1000)
    body = field_bytes(0x0A, series)
    assert body == bytes.fromhex(
        "0a1d"                          # timeseries (field 1, length-delimited), 29 bytes
        "0a0d"                          #   labels (field 1), 13 bytes
        "0a08" "5f5f6e616d655f5f"       #     name (1): "__name__"
        "1201" "78"                     #     value (2): "x"
        "120c"                          #   samples (field 2), 12 bytes
        "09" "000000000000f83f"         #     value (1, fixed64): 1.5 little-endian
        "10" "e807")                    #     timestamp (2, varint): 1000


# Written by the protobuf runtime (7.36.2, upb) for the same request built as messages:
# two labels sorted after "__name__", one before it ("é" -> "_"), 0.0 left out, -0.0 kept,
# timestamp 0 left out, a negative timestamp as 10 bytes, a series given out of order.
PROTOBUF_BYTES = (
    "0a7c0a230a085f5f6e616d655f5f12176370755f74656d70657261747572655f63656c736975730a120a0964"
    "65766963655f69641205626f782d310a0b0a047a6f6e651203736f63121009666666666666474010bbe5b69d"
    "9d33121009000000000000008010a3edb69d9d3312100966666666661271c0108bf5b69d9d330a650a270a08"
    "5f5f6e616d655f5f121b6e6574776f726b5f726563656976655f62797465735f746f74616c0a120a09646576"
    "6963655f69641205626f782d310a120a09696e7465726661636512057777616e3012090900003426f56b0c43"
    "120710bbe5b69d9d330a420a070a015f1202c3bc0a0d0a085f5f6e616d655f5f1201780a120a096465766963"
    "655f69641205626f782d31121409000000000000044010ffffffffffffffffff01")


def test_same_bytes_as_the_protobuf_runtime() -> None:
    samples = [
        Sample("cpu.temperature", 46.8, 1760193000123, make_labels(zone="soc")),
        Sample("network.receive_bytes_total", 0.0, 1760193000123, make_labels(interface="wwan0")),
        Sample("cpu.temperature", -0.0, 1760193001123, make_labels(zone="soc")),
        Sample("cpu.temperature", -273.15, 1760193002123, make_labels(zone="soc")),
        Sample("network.receive_bytes_total", 1e15, 0, make_labels(interface="wwan0")),
        Sample("x", 2.5, -1, make_labels(é="ü")),
    ]
    assert write_request(RemoteWriteSeries("box-1"), samples).hex() == PROTOBUF_BYTES


names = st.sampled_from(["cpu.usage_percent", "cpu.temperature", "srt.rtt_seconds", "9lives", "a-b"])
label_names = st.sampled_from(["cpu", "zone", "Zone", "interface", "device_id", "__name__", "é", "_1", "a.b"])
samples_strategy = st.lists(st.builds(
    Sample, names,
    st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -0.0, 1.0, 46.8]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.integers(1_700_000_000_000, 1_700_000_100_000),
    st.dictionaries(label_names, st.text(max_size=5), max_size=3).map(make_labels)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(samples_strategy)
def test_decodes_back_to_the_samples_grouped_sorted_and_labelled(samples: list[Sample]) -> None:
    decoded = decode(write_request(RemoteWriteSeries("box-7"), samples))
    expected: dict[tuple[str, str], tuple[list[tuple[str, str]], list[tuple[float, int]]]] = {}
    for s in samples:
        labels = {"__name__": promql_name(s.name), "device_id": "box-7"}
        labels.update((promql_label(k), v) for k, v in s.labels)
        key = (s.name, repr(s.labels))
        expected.setdefault(key, (sorted(labels.items()), []))[1].append((s.value, s.timestamp_ms))  # type: ignore[arg-type]
    assert len(decoded) == len(expected)  # one TimeSeries per series, in first-seen order
    for (labels, points), (want_labels, want_points) in zip(decoded, expected.values(), strict=True):
        assert labels == want_labels  # sorted by name in byte order, like the vm-jsonl labels
        assert [t for _, t in points] == sorted(t for _, t in want_points)
        # Stable: equal timestamps keep their order. Values exact, -0.0 included.
        assert [struct.pack("<d", v) for v, _ in points] == [
            struct.pack("<d", v) for v, _ in sorted(want_points, key=lambda p: p[1])]


def test_labels_match_vm_jsonl() -> None:
    sample = Sample("disk.read_bytes_total", 5.0, 1, make_labels(device="mmcblk0", **{"a.b": "c"}))
    line = vm_jsonl(VmSeriesHeads("box"), [sample]).decode()
    [(labels, _)] = decode(write_request(RemoteWriteSeries("box"), [sample]))
    import json
    assert dict(labels) == json.loads(line)["metric"]


# -- compression and the format -----------------------------------------------------


def test_remote_write_format_is_protobuf_in_snappy_blocks() -> None:
    fmt = wire_format("remote-write", "box")
    assert (fmt.content_type, fmt.content_encoding) == ("application/x-protobuf", "snappy")
    assert fmt.headers == {"X-Prometheus-Remote-Write-Version": "0.1.0"}
    samples = [Sample("srt.rtt_seconds", i / 1000, 1_760_000_000_000 + i * 1000, make_labels(stream="live"))
               for i in range(500)]
    raw = fmt.encode(samples, 0)
    body = fmt.body(samples, 0)
    assert len(body) < len(raw)
    # The block format starts with the uncompressed length as a varint; the framed (stream)
    # format would start with the stream identifier chunk ff 06 00 00 "sNaPpY".
    assert read_varint(body, 0)[0] == len(raw) and not body.startswith(b"\xff\x06\x00\x00sNaPpY")
    assert bytes(cramjam.snappy.decompress_raw(body)) == raw


def test_gzip_formats_own_their_compression_and_level() -> None:
    samples = [Sample("cpu.usage_percent", float(i % 7), 1_760_000_000_000 + i * 5000, make_labels(cpu="0"))
               for i in range(200)]
    for name in ("json", "vm-jsonl"):
        fmt = wire_format(name, "box")
        assert fmt.content_encoding == "gzip" and fmt.headers == {}
        raw = fmt.encode(samples, 0)
        assert fmt.body(samples, 0) == gzip_bytes(raw) == gzip_bytes(raw, GZIP_LEVEL)
        assert gzip.decompress(wire_format(name, "box", compression_level=9).body(samples, 0)) == raw
    assert len(wire_format("vm-jsonl", "b", 9).body(samples, 0)) < len(wire_format("vm-jsonl", "b", 1).body(samples, 0))


def test_missing_snappy_is_a_config_error_naming_the_field_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cramjam", None)  # what an install without the extra sees
    text = ("device: {id: b}\nstorage: {path: /tmp/x.db}\n"
            "remote: {url: 'http://127.0.0.1:8428/api/v1/write', format: remote-write}\n"
            "metrics: [{name: cpu}]\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    message = str(caught.value)
    assert caught.value.key == "remote.format" and "cramjam" in message
    assert "pip install 'belabox-metrics[remote-write]'" in message
    with pytest.raises(RuntimeError, match=r"belabox-metrics\[remote-write\]"):
        wire_format("remote-write", "b")
    monkeypatch.undo()
    assert parse_config(text).remote.format == "remote-write"


def test_zero_and_negative_zero() -> None:
    assert sample_bytes(0.0, 5) == bytes.fromhex("1202" "1005")       # value left out (proto3 default)
    assert decode(field_bytes(0x0A, sample_bytes(-0.0, 0)))[0][1] == [(-0.0, 0)]
    assert math.copysign(1.0, decode(field_bytes(0x0A, sample_bytes(-0.0, 0)))[0][1][0][0]) == -1.0


REMOTE = ("device: {{id: b}}\nstorage: {{path: /tmp/x.db}}\nremote: {{url: 'http://127.0.0.1:8428{path}', "
          "format: {fmt}{extra}}}\nmetrics: [{{name: cpu}}]\n")


def test_compression_level_default_and_range() -> None:
    assert parse_config(REMOTE.format(path="/api/v1/import", fmt="vm-jsonl", extra="")).remote.compression_level == 6
    assert parse_config(REMOTE.format(path="/api/v1/import", fmt="vm-jsonl",
                                      extra=", compression_level: 1")).remote.compression_level == 1
    for bad in ("0", "10", "fast"):
        with pytest.raises(ConfigError) as caught:
            parse_config(REMOTE.format(path="/api/v1/import", fmt="vm-jsonl", extra=f", compression_level: {bad}"))
        assert caught.value.key == "remote.compression_level"


def test_compression_level_with_remote_write_is_an_error() -> None:
    assert parse_config(REMOTE.format(path="/api/v1/write", fmt="remote-write", extra="")).remote.format == "remote-write"
    with pytest.raises(ConfigError) as caught:
        parse_config(REMOTE.format(path="/api/v1/write", fmt="remote-write", extra=", compression_level: 9"))
    assert caught.value.key == "remote.compression_level" and "snappy" in str(caught.value)
