"""The bandwidth budget: a token bucket on compressed bytes, lower while a stream is live."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.bandwidth import BandwidthSettings, TokenBucket
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import Response
from belabox_metrics.upload.uploader import Uploader, UploadPolicy

SETTINGS = BandwidthSettings(max_bytes_per_second=10_000, live_bytes_per_second=1_000, burst_bytes=4_000)


def test_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(clock, SETTINGS)
    assert bucket.delay_for(4_000) == 0
    bucket.charge(4_000)
    assert bucket.delay_for(2_000) == pytest.approx(0.2)
    clock.advance(0.2)
    assert bucket.delay_for(2_000) == pytest.approx(0.0)


def test_live_stream_lowers_the_rate_and_the_burst() -> None:
    clock = FakeClock()
    live = {"on": True}
    bucket = TokenBucket(clock, SETTINGS, live=lambda: live["on"])
    assert bucket.rate() == 1_000
    # No saved-up burst on the stream: the bucket holds at most 2 s of the live rate, so
    # after one 4,000-byte request the next 1,000 bytes wait for the 2,000-byte debt + 1,000.
    assert bucket.delay_for(4_000) == 0.0
    bucket.charge(4_000)
    assert bucket.delay_for(1_000) == pytest.approx(3.0)
    live["on"] = False
    assert bucket.rate() == 10_000


def test_oversized_request_waits_for_a_full_bucket_then_goes() -> None:
    clock = FakeClock()
    bucket = TokenBucket(clock, SETTINGS)
    bucket.charge(4_000)
    assert bucket.delay_for(50_000) == pytest.approx(0.4)  # until full (4,000 B), not 5 s


class Sink:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, int]] = []

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        self.sent.append((self.clock.monotonic(), len(body)))
        return Response(204)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("live", "rate"), [(False, 10_000), (True, 1_000)])
def test_uploader_spends_at_most_the_budget(tmp_path: Path, live: bool, rate: int) -> None:
    import random
    queue = SampleQueue.open(str(tmp_path / "m.db"))
    rng = random.Random(5)
    queue.append([Sample("x", rng.random(), 1_795_000_000_000 + i, make_labels(k=str(i % 7)))
                  for i in range(6_000)])
    clock = FakeClock(wall=1_795_000_100.0)
    sink = Sink(clock)
    bucket = TokenBucket(clock, SETTINGS, live=lambda: live)
    uploader = Uploader(queue, sink, url="http://127.0.0.1:9/api/v1/import", fmt=wire_format("vm-jsonl", "d"),
                        clock=clock, log=logging.getLogger("t"), policy=UploadPolicy(max_samples=300),
                        budget=bucket)
    start = clock.monotonic()
    result = uploader.run_cycle()
    assert result.error is None and queue.pending_count(uploader.destination) == 0
    total = sum(size for _, size in sink.sent)
    elapsed = clock.monotonic() - start
    burst = 4_000 if not live else 2_000
    assert total > 3 * burst  # enough traffic for the rate to matter
    assert total <= burst + rate * elapsed + max(size for _, size in sink.sent)
    assert bucket.waited_seconds > 0
