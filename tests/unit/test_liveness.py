"""Stream liveness after a start: unknown (and treated as live) until every SRT/BELABOX
collector has answered once, so a restart in the middle of a stream does not put the
backlog onto the uplink at the idle budget (issue 23)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from pathlib import Path

from belabox_metrics.agent import Agent
from belabox_metrics.clock import FakeClock
from belabox_metrics.config import parse_config
from belabox_metrics.liveness import IDLE, LIVE, UNKNOWN, StreamLiveness
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.runtime.collection import CollectionLoop
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.bandwidth import BandwidthSettings, TokenBucket
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import Response
from belabox_metrics.upload.uploader import Uploader, UploadPolicy
from tests.unit.test_srt_support import fixture_text

CONNECTED = Sample("srt.stream_connected", 1.0, 0, ())
DISCONNECTED = Sample("srt.stream_connected", 0.0, 0, ())
OTHER = Sample("srt.rtt_seconds", 0.05, 0, ())


def test_unknown_until_every_awaited_collector_answered() -> None:
    clock = FakeClock()
    liveness = StreamLiveness(clock, hold=15.0, awaited=["srt", "srt.belaui"], settle=30.0)
    assert liveness.state() == UNKNOWN and liveness.live() and not liveness.known()
    liveness.observe("srt", [DISCONNECTED])
    assert liveness.state() == UNKNOWN  # the other has not answered yet
    liveness.observe("srt.belaui", [OTHER])  # a round without a live signal says nothing
    assert liveness.state() == UNKNOWN
    liveness.observe("srt.belaui", None)  # failed outright: nothing to stream through
    assert liveness.state() == IDLE and not liveness.live()


def test_a_live_signal_makes_it_live_at_once_and_for_the_hold() -> None:
    clock = FakeClock()
    liveness = StreamLiveness(clock, hold=15.0, awaited=["srt"], settle=30.0)
    liveness.observe("srt", [OTHER, CONNECTED])
    assert liveness.state() == LIVE
    clock.advance(14.9)
    assert liveness.state() == LIVE
    clock.advance(0.2)
    assert liveness.state() == IDLE


def test_a_collector_that_never_answers_counts_as_no_stream_after_settle() -> None:
    clock = FakeClock()
    liveness = StreamLiveness(clock, hold=15.0, awaited=["srt"], settle=30.0)
    clock.advance(29.0)
    assert liveness.state() == UNKNOWN
    clock.advance(1.0)
    assert liveness.state() == IDLE


def test_without_stream_collectors_the_state_is_known_at_once() -> None:
    liveness = StreamLiveness(FakeClock(), hold=15.0, awaited=[], settle=30.0)
    assert liveness.state() == IDLE and liveness.known()


def agent_config(tmp_path: Path, stats: Path) -> str:
    return f"""
device: {{id: t}}
storage: {{path: {tmp_path / 'a.db'}}}
remote:
  url: "http://127.0.0.1:9/api/v1/import"
  format: vm-jsonl
  bandwidth: {{max_bytes_per_second: 64KiB, live_bytes_per_second: 4KiB, burst_bytes: 256KiB}}
health: {{listen: "off"}}
metrics:
  - {{name: memory}}
  - name: srt
    interval: 1s
    sources: [{{type: srt-live-transmit, stats_file: {stats}, stream: sender}}]
"""


SEND_INTERVAL = fixture_text("slt_sender_lossy_interval.json").strip()  # captured from srt-live-transmit


def test_agent_restarted_mid_stream_is_live_from_its_first_round(tmp_path: Path) -> None:
    stats = tmp_path / "send.json"
    stats.write_text(SEND_INTERVAL + "\n")  # srt-live-transmit is streaming already
    settings = parse_config(agent_config(tmp_path, stats))
    clock = FakeClock(wall=time.time())  # the stats file was written just now
    agent = Agent(settings, clock=clock)
    state = agent.health()["bandwidth"]
    assert isinstance(state, dict)
    # Before any collector ran: not known, and the live budget applies.
    assert state["stream"] == "unknown" and state["stream_live"] is True
    assert state["limit_bytes_per_second"] == 4 * 1024
    stored: list[Sample] = []
    loop = CollectionLoop(agent.scheduled, lambda samples: stored.extend(samples) or len(samples), clock,
                          logging.getLogger("t"), observe=agent.liveness.observe)
    loop.run_due(agent.scheduled)
    state = agent.health()["bandwidth"]
    assert isinstance(state, dict)
    assert state["stream"] == "live", "the first poll of a fresh stats file reports the stream"
    assert any(s.name == "srt.send_rate_bits_per_second" for s in stored)


def test_agent_without_a_stream_becomes_idle_after_its_first_round(tmp_path: Path) -> None:
    settings = parse_config(agent_config(tmp_path, tmp_path / "missing.json"))
    clock = FakeClock(wall=1_800_000_000.0)
    agent = Agent(settings, clock=clock)
    loop = CollectionLoop(agent.scheduled, lambda samples: len(samples), clock, logging.getLogger("t"),
                          observe=agent.liveness.observe)
    loop.run_due(agent.scheduled)  # the stats file does not exist: the srt collector fails
    state = agent.health()["bandwidth"]
    assert isinstance(state, dict)
    assert state["stream"] == "idle" and state["limit_bytes_per_second"] == 64 * 1024


class Sink:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        self.sizes.append(len(body))
        return Response(204)

    def close(self) -> None:
        pass


def test_requests_while_live_fit_the_live_bucket(tmp_path: Path) -> None:
    # A request larger than the bucket would go at once when it is full and leave it in
    # debt: a burst of max_request_bytes on the stream. While live it is cut to the bucket.
    queue = SampleQueue.open(str(tmp_path / "m.db"))
    rng = random.Random(7)
    queue.append([Sample("x", rng.random(), 1_795_000_000_000 + i, make_labels(k=str(i % 7)))
                  for i in range(6_000)])
    clock = FakeClock(wall=1_795_000_100.0)
    settings = BandwidthSettings(max_bytes_per_second=100_000, live_bytes_per_second=1_000, burst_bytes=50_000)
    bucket = TokenBucket(clock, settings, live=lambda: True)
    sink = Sink()
    uploader = Uploader(queue, sink, url="http://127.0.0.1:9/api/v1/import", fmt=wire_format("vm-jsonl", "d"),
                        clock=clock, log=logging.getLogger("t"), policy=UploadPolicy(max_samples=10_000),
                        budget=bucket)
    uploader.run_cycle(deadline=clock.monotonic() + 60)
    assert sink.sizes, "nothing was sent"
    assert max(sink.sizes) <= 2_000, f"a {max(sink.sizes)}-byte request while live (bucket 2,000)"
