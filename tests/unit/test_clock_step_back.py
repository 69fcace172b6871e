"""A wall-clock step back while the agent runs (NTP correcting a clock that ran ahead).

The agent's real collectors read a captured /proc tree whose counters grow at a constant
rate per monotonic second; the clock is a FakeClock (the project's clock seam) that a test
steps back 60 s or 1 h between two rounds. Samples go through the agent's own collection
loop and stamps into its real queue. Nothing collected may be dropped (a sample stamped on
an existing (series, timestamp) would be), per series the stamps must increase strictly in
collection order, and a counter read in time order must never go down.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from belabox_metrics.agent import Agent
from belabox_metrics.clock import FakeClock
from belabox_metrics.config import parse_config
from belabox_metrics.model import Sample
from belabox_metrics.runtime.collection import CollectionLoop
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.timesync import CATCH_UP_SPEED, SampleStamps
from tests.proc_tree import advance_counters, copy_tree

SYNCED = 1_795_000_000.0  # 2026-11-18
INTERVAL = 1.0
ROUNDS_BEFORE = 20

Series = tuple[str, tuple[tuple[str, str], ...]]


class Run:
    """The agent's collectors, loop, stamps and queue on a FakeClock; one round per step."""

    def __init__(self, tmp: Path) -> None:
        self.root = copy_tree(tmp / "tree")
        advance_counters(self.root, 0)
        self.settings = parse_config(f"""
device: {{id: stepped}}
storage: {{path: {tmp / 'agent.db'}}}
remote: {{url: "http://127.0.0.1:9/", enabled: false}}
health: {{listen: "off"}}
host: {{proc_root: {self.root / 'proc'}, sys_root: {self.root / 'sys'}}}
monitoring: {{self_metrics: false}}
metrics:
  - {{name: cpu, interval: {INTERVAL}s}}
  - {{name: network, interval: {INTERVAL}s}}
  - {{name: disk, interval: {INTERVAL}s}}
""")
        self.clock = FakeClock(wall=SYNCED, monotonic=500.0)
        self.agent = Agent(self.settings, clock=self.clock)
        self.queue = SampleQueue.open(self.settings.storage.path)
        self.collected: list[tuple[Sample, float]] = []  # each sample with the wall clock then
        self.loop = CollectionLoop(self.agent.scheduled, self._store, self.clock,
                                   logging.getLogger("test"), stamp=self.agent.stamps.now_ms)

    def _store(self, samples: list[Sample]) -> int:
        self.collected.extend((s, self.clock.wall()) for s in samples)
        return self.queue.append(samples)

    def rounds(self, count: int) -> None:
        stop = threading.Event()
        for _ in range(count):
            self.loop.run(stop, max_rounds=1)
            elapsed = min(m.due for m in self.agent.scheduled) - self.clock.monotonic()
            advance_counters(self.root, elapsed)
            self.clock.advance(elapsed)

    def stored_by_series(self) -> dict[Series, list[tuple[int, float | None]]]:
        series: dict[Series, list[tuple[int, float | None]]] = defaultdict(list)
        for row in self.queue.all():  # ordered by timestamp
            series[(row.sample.name, row.sample.labels)].append((row.ts, row.sample.value))
        return series


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    made = Run(tmp_path)
    yield made
    made.queue.close()


def step_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and "stepped back" in r.getMessage()]


@pytest.mark.parametrize("step_s", [60.0, 3600.0], ids=["60s", "1h"])
def test_step_back_drops_nothing_and_keeps_every_series_in_time_order(
        run: Run, step_s: float, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    run.rounds(ROUNDS_BEFORE)
    run.clock.jump_wall(-step_s)
    run.rounds(120)

    stored = run.stored_by_series()
    assert sum(len(rows) for rows in stored.values()) == len(run.collected) > 140 * 20  # nothing dropped
    by_series: dict[Series, list[int]] = defaultdict(list)
    for sample, _ in run.collected:
        by_series[(sample.name, sample.labels)].append(sample.timestamp_ms)
    for key, stamps in by_series.items():
        assert all(a < b for a, b in pairwise(stamps)), key  # strictly increasing
        assert stamps == [ts for ts, _ in stored[key]], key  # stored as collected
    counters = {key: rows for key, rows in stored.items() if key[0].endswith("_total")}
    assert any(name == "network.receive_bytes_total" for name, _ in counters)
    for key, rows in counters.items():
        values = [value for _, value in rows]
        assert all(a is not None and b is not None and a <= b for a, b in pairwise(values)), key

    # After the step: stamps 0.9 s apart, ahead of the wall clock by a shrinking amount.
    eth0 = [ts for ts, _ in stored[("network.receive_bytes_total", (("interface", "eth0"),))]]
    gaps = {b - a for a, b in pairwise(eth0[ROUNDS_BEFORE - 1:])}
    assert gaps == {int(INTERVAL * 1000 * CATCH_UP_SPEED)}
    ahead = run.agent.stamps.ahead_ms
    assert ahead == pytest.approx(step_s * 1000 - 120 * 100, abs=INTERVAL * 1000)
    assert run.agent.stamps.steps_back == 1
    warnings = step_warnings(caplog)
    assert len(warnings) == 1 and "until the clock catches up" in warnings[0].getMessage()
    exposition = run.agent.self_metrics.exposition()
    assert "time_clock_steps_back_total 1" in exposition
    assert f"time_stamps_ahead_seconds {ahead / 1000:g}" in exposition


def test_after_a_60s_step_back_stamps_follow_the_wall_clock_again_once_it_caught_up(
        run: Run, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    run.rounds(ROUNDS_BEFORE)
    run.clock.jump_wall(-60.0)
    catch_up_rounds = round(60 / (1 - CATCH_UP_SPEED) / INTERVAL)  # 600: 0.1 s gained per round
    run.rounds(catch_up_rounds + 10)

    assert run.agent.stamps.ahead_ms == 0
    last_round = [(s.timestamp_ms, wall) for s, wall in run.collected[-5:]]
    assert all(ts == int(wall * 1000) for ts, wall in last_round)
    assert any("caught up" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert len(step_warnings(caplog)) == 1
    assert sum(len(rows) for rows in run.stored_by_series().values()) == len(run.collected)


def test_a_step_back_beyond_max_future_is_followed_at_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(wall=SYNCED)
    stamps = SampleStamps(clock, logging.getLogger("test"), max_catch_up_s=3600.0)
    first = stamps.now_ms()
    clock.advance(1.0)
    clock.jump_wall(-2 * 3600.0)
    assert stamps.now_ms() == int(clock.wall() * 1000) < first
    assert stamps.steps_back == 1 and stamps.ahead_ms == 0
    warnings = step_warnings(caplog)
    assert len(warnings) == 1 and "further than remote.max_future" in warnings[0].getMessage()


def test_a_step_back_shorter_than_the_interval_needs_nothing() -> None:
    clock = FakeClock(wall=SYNCED)
    stamps = SampleStamps(clock, logging.getLogger("test"), max_catch_up_s=86400.0)
    first = stamps.now_ms()
    clock.advance(1.0)
    clock.jump_wall(-0.4)  # still after the previous stamp
    assert stamps.now_ms() == int(clock.wall() * 1000) == first + 600
    assert stamps.steps_back == 0 and stamps.ahead_ms == 0
