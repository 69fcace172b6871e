"""Requests sized by bytes, not a sample count (issue 21): at thousands of series a cycle
sends a few large requests, each within ``remote.max_request_bytes``, and while a stream is
live each within the live bucket, without encoding a claim that has to be split again."""

from __future__ import annotations

import gzip
import json
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml

from belabox_metrics.clock import FakeClock
from belabox_metrics.config import Settings, load_config
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.runtime.upload_loop import upload_policy
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.bandwidth import TokenBucket
from belabox_metrics.upload.encode import WireFormat, wire_format
from belabox_metrics.upload.transport import Response
from belabox_metrics.upload.uploader import Uploader
from tests.helpers import REPO_ROOT

NOW = 1_795_000_000.0
INTERFACES = 660  # bench_scale's 100x tree: ~7,300 host series, 11 per interface
COUNTERS = ("receive_bytes_total", "receive_packets_total", "receive_errors_total", "receive_drops_total",
            "transmit_bytes_total", "transmit_packets_total", "transmit_errors_total", "transmit_drops_total")
RATES = ("receive_bytes_per_second", "transmit_bytes_per_second")


class Sink:
    """The transport edge: answers 204, records each body's size and decoded sample count."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.samples: list[int] = []

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        text = gzip.decompress(body).decode()
        if text.startswith('{"device_id"'):
            count = len(json.loads(text)["metrics"])
        else:
            count = sum(len(json.loads(line)["values"]) for line in text.splitlines())
        self.sizes.append(len(body))
        self.samples.append(count)
        return Response(204)

    def close(self) -> None:
        pass


class CountingFormat:
    """A wire format that counts the samples it encodes (a split claim is encoded twice)."""

    def __init__(self, fmt: WireFormat) -> None:
        self.encoded = 0

        def encode(samples: Sequence[Sample], now_ms: int) -> bytes:
            self.encoded += len(samples)
            return fmt.encode(samples, now_ms)

        self.fmt = WireFormat(fmt.name, fmt.content_type, encode, fmt.compress, fmt.content_encoding, fmt.headers)


class Box:
    """~7,300 network series, two samples each per 10 s cycle, as the network collector makes."""

    def __init__(self) -> None:
        self.rng = random.Random(21)
        self.counters = [[1_000_000_000] * len(COUNTERS) for _ in range(INTERFACES)]
        self.ts = int(NOW * 1000) - 3_600_000

    def round(self) -> list[Sample]:
        samples = []
        for index, counters in enumerate(self.counters):
            labels = make_labels(interface=f"usb{index}")
            for n, name in enumerate(COUNTERS):
                counters[n] += self.rng.randint(0, 400_000) if n in (0, 4) else self.rng.randint(0, 3)
                samples.append(Sample(f"network.{name}", float(counters[n]), self.ts, labels))
            for name in RATES:
                samples.append(Sample(f"network.{name}", round(self.rng.uniform(0, 400_000), 1), self.ts, labels))
            samples.append(Sample("network.counter_resets_total", 0.0, self.ts, labels))
        self.ts += 5_000
        return samples

    def cycle(self, queue: SampleQueue) -> int:
        rounds = self.round() + self.round()
        queue.append(rounds)
        return len(rounds)


def shipped_settings(tmp_path: Path, fmt: str) -> Settings:
    config = yaml.safe_load((REPO_ROOT / "configs" / "config.yaml").read_text())
    config["remote"] = {**config["remote"], "url": "http://127.0.0.1:9/api/v1/import", "format": fmt}
    config["storage"] = {"path": str(tmp_path / "m.db")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(str(path))


def uploader(tmp_path: Path, fmt_name: str, live: bool | None) -> tuple[Uploader, SampleQueue, Sink, CountingFormat,
                                                                         TokenBucket | None]:
    settings = shipped_settings(tmp_path, fmt_name)
    queue = SampleQueue.open(str(tmp_path / "m.db"))
    clock = FakeClock(wall=NOW)
    sink = Sink()
    counting = CountingFormat(wire_format(fmt_name, "box-1"))
    bucket = None if live is None else TokenBucket(clock, settings.remote.bandwidth, live=lambda: live)
    up = Uploader(queue, sink, url="http://127.0.0.1:9/api/v1/import", fmt=counting.fmt, clock=clock,
                  log=logging.getLogger("t"), policy=upload_policy(settings),
                  budget=bucket, rng=random.Random(1))
    return up, queue, sink, counting, bucket


@pytest.mark.parametrize("fmt_name", ["vm-jsonl", "json"])
def test_a_cycle_at_thousands_of_series_is_a_few_requests_each_within_max_request_bytes(
        tmp_path: Path, fmt_name: str) -> None:
    up, queue, sink, counting, _ = uploader(tmp_path, fmt_name, live=None)
    max_bytes = up.policy.max_bytes
    box = Box()
    per_cycle: list[int] = []
    for _ in range(5):
        before, encoded_before = len(sink.sizes), counting.encoded
        stored = box.cycle(queue)
        result = up.run_cycle()
        assert result.error is None and queue.pending_count(up.destination) == 0
        assert sum(sink.samples[before:]) == stored
        per_cycle.append(len(sink.sizes) - before)
        if len(per_cycle) > 1:  # once a body was seen, claims fit: nothing encoded twice
            assert counting.encoded - encoded_before == stored
    # 14,600 samples a cycle: with 500 per request (the old shipped batch_size) that was 30.
    assert per_cycle[0] <= 4 and max(per_cycle[1:]) <= 2, per_cycle
    assert max(sink.sizes) <= max_bytes


def test_requests_while_live_fit_the_live_bucket_and_are_not_split(tmp_path: Path) -> None:
    up, queue, sink, counting, bucket = uploader(tmp_path, "vm-jsonl", live=True)
    assert bucket is not None
    bucket_bytes = bucket.max_request_bytes()
    assert bucket_bytes < up.policy.max_bytes  # the live bucket is the tighter limit
    box = Box()
    stored = sum(box.cycle(queue) for _ in range(2))  # a backlog of two cycles
    result = up.run_cycle()
    assert result.error is None and queue.pending_count(up.destination) == 0
    assert sum(sink.samples) == stored
    assert max(sink.sizes) <= bucket_bytes
    # Claims sized for the bucket: next to nothing encoded twice (a split re-encodes a claim),
    # and requests carry a fair share of the bucket, not a fixed count.
    assert counting.encoded <= 1.05 * stored
    assert sum(sink.sizes) / len(sink.sizes) >= 0.4 * bucket_bytes


def test_live_then_idle_requests_grow_to_max_request_bytes(tmp_path: Path) -> None:
    live = {"on": True}
    up, queue, sink, counting, bucket = uploader(tmp_path, "vm-jsonl", live=True)
    assert bucket is not None
    bucket.live = lambda: live["on"]
    box = Box()
    box.cycle(queue)
    up.run_cycle()
    live_requests, live_bucket = len(sink.sizes), bucket.max_request_bytes()
    assert max(sink.sizes) <= live_bucket
    live["on"] = False
    stored = sum(box.cycle(queue) for _ in range(3))
    before = counting.encoded
    assert up.run_cycle().error is None and queue.pending_count(up.destination) == 0
    idle = sink.sizes[live_requests:]
    assert max(idle) <= up.policy.max_bytes
    assert max(idle) > 2 * live_bucket  # no longer held to the live bucket
    assert counting.encoded - before <= 1.05 * stored
