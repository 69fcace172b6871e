"""The receiver's pure validator: every refusal names the field and why."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from belabox_metrics.model import Sample, make_labels
from belabox_metrics.receiver.app import ListenAddressError, parse_listen
from belabox_metrics.receiver.validate import (
    MAX_METRICS,
    BodyTooLarge,
    PayloadError,
    ReceivedSample,
    decode_json,
    gunzip_limited,
    parse_upload,
    validate_payload,
)
from belabox_metrics.timefmt import parse_ms
from belabox_metrics.upload.encode import seed_json

NOW_MS = parse_ms("2025-10-11T15:00:00.000Z")
STAMP = "2025-10-11T14:30:00.123Z"


def payload(**top: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "device_id": "belabox-001",
        "timestamp": STAMP,
        "metrics": [
            {"name": "cpu.temperature", "value": 52.3, "timestamp": STAMP,
             "labels": {"zone": "soc-thermal"}},
            {"name": "srt_packet_loss", "value": 3, "timestamp": STAMP},
        ],
    }
    document.update(top)
    return document


def with_metric(index: int = 0, drop: str | None = None, **fields: Any) -> dict[str, Any]:
    document = payload()
    item = document["metrics"][index]
    item.update(fields)
    if drop:
        del item[drop]
    return document


def refusal(document: object) -> str:
    with pytest.raises(PayloadError) as caught:
        validate_payload(document, NOW_MS)
    return str(caught.value)


def test_good_payload_becomes_samples_with_canonical_labels() -> None:
    batch = validate_payload(payload(), NOW_MS)
    assert batch.device_id == "belabox-001"
    assert batch.sent_at_ms == parse_ms(STAMP)
    assert batch.samples == (
        ReceivedSample("cpu.temperature", (("zone", "soc-thermal"),), parse_ms(STAMP), 52.3),
        ReceivedSample("srt_packet_loss", (), parse_ms(STAMP), 3.0),
    )
    assert isinstance(batch.samples[1].value, float)


def test_what_the_agent_encodes_is_accepted_unchanged() -> None:
    stamp = parse_ms(STAMP)
    samples = [
        Sample("cpu.temperature", 52.3, stamp, make_labels(zone="soc-thermal", b="2")),
        Sample("srt.rtt_ms", 0.0, stamp + 1),
    ]
    batch = parse_upload(seed_json("belabox-001", samples, stamp + 5), NOW_MS)
    assert [(s.name, s.labels, s.timestamp_ms, s.value) for s in batch.samples] == [
        (s.name, s.labels, s.timestamp_ms, s.value) for s in samples
    ]


def test_empty_metrics_list_is_accepted() -> None:
    assert validate_payload(payload(metrics=[]), NOW_MS).samples == ()


def test_null_or_empty_labels_mean_none() -> None:
    assert validate_payload(with_metric(labels=None), NOW_MS).samples[0].labels == ()
    assert validate_payload(with_metric(labels={}), NOW_MS).samples[0].labels == ()


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ([1, 2], "body: must be a JSON object, got an array"),
        ("text", "body: must be a JSON object, got a string"),
        (None, "body: must be a JSON object, got null"),
        ({k: v for k, v in payload().items() if k != "device_id"}, "device_id: missing"),
        ({k: v for k, v in payload().items() if k != "timestamp"}, "timestamp: missing"),
        ({k: v for k, v in payload().items() if k != "metrics"}, "metrics: missing"),
        (payload(extra=1), "extra: unknown field"),
        (payload(**{"forged\nINFO line": 1}), "'forged\\nINFO line': unknown field"),
        (payload(device_id=7), "device_id: must be a string, got a number"),
        (payload(device_id=""), "device_id: '' must match"),
        (payload(device_id="-leading-dash"), "device_id: '-leading-dash' must match"),
        (payload(device_id="has space"), "device_id: 'has space' must match"),
        (payload(device_id="a" * 65), "device_id:"),
        (payload(device_id="box\n"), "device_id:"),
        (payload(timestamp=1760193000), "timestamp: must be a string, got a number"),
        (payload(timestamp="yesterday"), "timestamp: 'yesterday' is not an RFC 3339"),
        (payload(metrics={"name": "x"}), "metrics: must be an array, got an object"),
        (payload(metrics=[1]), "metrics[0]: must be an object, got a number"),
        (with_metric(1, drop="name"), "metrics[1].name: missing"),
        (with_metric(1, drop="value"), "metrics[1].value: missing"),
        (with_metric(1, drop="timestamp"), "metrics[1].timestamp: missing"),
        (with_metric(1, lables={"a": "b"}), "metrics[1].lables: unknown field"),
        (with_metric(name=5), "metrics[0].name: must be a string, got a number"),
        (with_metric(name=""), "metrics[0].name: '' must match"),
        (with_metric(name="9lives"), "metrics[0].name: '9lives' must match"),
        (with_metric(name="cpu-temp"), "metrics[0].name: 'cpu-temp' must match"),
        (with_metric(name="x" * 201), "metrics[0].name:"),
        (with_metric(value=True), "metrics[0].value: must be a finite number, got a boolean"),
        (with_metric(value="52.3"), "metrics[0].value: must be a finite number, got a string"),
        (with_metric(value=None), "metrics[0].value: must be a finite number, got null"),
        (with_metric(value=[1]), "metrics[0].value: must be a finite number, got an array"),
        (with_metric(value=float("nan")), "metrics[0].value: must be a finite number"),
        (with_metric(value=float("inf")), "metrics[0].value: must be a finite number"),
        (with_metric(value=10**400), "metrics[0].value: must be a finite number (integer too"),
        (with_metric(timestamp=1760193000123), "metrics[0].timestamp: must be a string"),
        (with_metric(timestamp="2025-10-11 14:30:00"), "metrics[0].timestamp: '2025-10-11 14:30"),
        (with_metric(timestamp="2025-02-30T00:00:00Z"), "metrics[0].timestamp:"),
        (with_metric(timestamp="1970-01-01T00:00:05.000Z"), "metrics[0].timestamp: 1970-01-01"),
        (with_metric(timestamp="1999-12-31T23:59:59.999Z"), "before 2000-01-01"),
        (with_metric(timestamp="2025-10-12T15:00:00.001Z"), "more than 1 day in the future"),
        (with_metric(timestamp="2" * 100), "metrics[0].timestamp: must be an RFC 3339"),
        (with_metric(labels=["zone"]), "metrics[0].labels: must be an object"),
        (with_metric(labels="zone=soc"), "metrics[0].labels: must be an object"),
        (with_metric(labels={"zone": 1}), "metrics[0].labels.zone: must be a string, got a number"),
        (with_metric(labels={"zone": {"deep": "x"}}), "metrics[0].labels.zone: must be a string"),
        (with_metric(labels={"zone": "x" * 1025}), "metrics[0].labels.zone: longer than 1024"),
        (with_metric(labels={"zone": "\ud800"}), "metrics[0].labels.zone: contains an unpaired"),
        (with_metric(labels={"1zone": "x"}), "metrics[0].labels: key '1zone' must match"),
        (with_metric(labels={"zo.ne": "x"}), "metrics[0].labels: key 'zo.ne' must match"),
        (with_metric(labels={"": "x"}), "metrics[0].labels: key '' must match"),
        (with_metric(labels={"k" * 101: "x"}), "metrics[0].labels: key"),
        (with_metric(labels={f"k{i}": "v" for i in range(33)}), "has 33 labels, at most 32"),
    ],
)
def test_refusals_name_the_field(document: object, expected: str) -> None:
    assert expected in refusal(document)


def test_limits_are_inclusive() -> None:
    limits = with_metric(
        name="n" * 200,
        labels={f"k{i}": "v" * 1024 for i in range(31)} | {"k" * 100: ""},
        timestamp="2025-10-12T15:00:00.000Z",  # exactly now + 1 day
    )
    limits["device_id"] = "d" * 64
    assert len(validate_payload(limits, NOW_MS).samples) == 2


def test_the_bad_item_is_named_by_its_index() -> None:
    document = payload(metrics=[payload()["metrics"][1]] * 5)
    document["metrics"] = [dict(m) for m in document["metrics"]]
    document["metrics"][3]["value"] = "oops"
    assert refusal(document).startswith("metrics[3].value: must be a finite number")


def test_too_many_metrics() -> None:
    item = payload()["metrics"][1]
    assert validate_payload(payload(metrics=[item] * MAX_METRICS), NOW_MS).samples
    assert "at most 100000 per request" in refusal(payload(metrics=[item] * (MAX_METRICS + 1)))


def test_send_time_must_parse_but_is_not_range_checked() -> None:
    # Samples carry their own (checked) timestamps; an odd send time alone refuses nothing.
    assert validate_payload(payload(timestamp="1970-01-01T00:00:00Z"), NOW_MS).samples


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "body: malformed JSON"),
        (b"{", "body: malformed JSON"),
        (b'{"device_id": "a",}', "body: malformed JSON"),
        (b"\xff\xfe{}", "body: not UTF-8 text"),
        (b'{"v": NaN}', "body: NaN is not valid JSON"),
        (b'{"v": Infinity}', "body: Infinity is not valid JSON"),
        (b'{"v": -Infinity}', "body: -Infinity is not valid JSON"),
        (b'{"a": 1, "a": 2}', "body: duplicate key 'a'"),
        (b"[" * 100_000 + b"]" * 100_000, "body: JSON nested too deeply"),
        (b"1" * 5000, "body: malformed JSON"),
    ],
)
def test_body_refusals(body: bytes, expected: str) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_json(body)
    assert str(caught.value).startswith(expected)


def test_nan_and_huge_exponent_values_are_refused_in_a_payload() -> None:
    good = json.dumps(payload())
    for literal in ("NaN", "Infinity", "1e400", "-1e400"):
        body = good.replace("52.3", literal).encode()
        with pytest.raises(PayloadError, match=r"value|NaN|Infinity"):
            parse_upload(body, NOW_MS)


def test_utf8_bom_is_tolerated() -> None:
    body = b"\xef\xbb\xbf" + json.dumps(payload()).encode()
    assert len(parse_upload(body, NOW_MS).samples) == 2


def test_gunzip_round_trip_and_concatenated_members() -> None:
    assert gunzip_limited(gzip.compress(b"hello"), 5) == b"hello"
    assert gunzip_limited(gzip.compress(b"ab") + gzip.compress(b"cd"), 10) == b"abcd"
    assert gunzip_limited(b"", 10) == b""


def test_gunzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000
    with pytest.raises(BodyTooLarge, match="more than 1048576 bytes after gzip"):
        gunzip_limited(bomb, 1024 * 1024)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not gzip at all", "body: invalid gzip data"),
        (gzip.compress(b"x" * 1000)[:-12], "body: truncated gzip data"),
        (gzip.compress(b"ok") + b"trailing", "body: invalid gzip data"),
    ],
)
def test_gunzip_refuses_corrupt_data(data: bytes, expected: str) -> None:
    with pytest.raises(PayloadError) as caught:
        gunzip_limited(data, 10_000)
    assert not isinstance(caught.value, BodyTooLarge)
    assert str(caught.value).startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:8080", ("::1", 8080)),
        ("localhost:0", ("localhost", 0)),
        (" 0.0.0.0:65535 ", ("0.0.0.0", 65535)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text", ["8080", ":8080", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:65536", "::1:8080",
             "[::1]", "[]:80", "[::1]8080", "host:-1"],
)
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ListenAddressError, match="listen address"):
        parse_listen(text)
