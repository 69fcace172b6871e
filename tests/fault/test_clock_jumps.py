"""Wall-clock jumps with the real host collectors in-process, an injected clock and the
RK3588 fixture /proc tree whose counters advance at a constant rate per monotonic second.

Scenario: a box boots with its clock at 1970 (no RTC battery), collects, NTP steps the
clock to 2026, then the clock jumps +1 h and -1 h. Compared with a control run whose
clock was right all along (same monotonic schedule):
- every value is identical: rates come from the monotonic clock, so no negative or
  inflated rate, and the next round is always one interval of monotonic time away;
- every timestamp is right: samples taken before the sync are held and re-stamped from
  the monotonic clock to when they were really taken; afterwards each carries the wall
  clock of its collection, the jump forward included; after the step back (behind samples
  already stored) stamps go on after the last one at 90 % of real time, so nothing lands
  on or between stored samples; nothing is lost on the way to the database.
tests/unit/test_timesync.py covers the trust rules and re-stamping primitives; this is
the whole path, collectors to database.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from pathlib import Path

from belabox_metrics.agent import Agent
from belabox_metrics.clock import FakeClock
from belabox_metrics.config import parse_config
from belabox_metrics.model import Sample
from belabox_metrics.runtime.collection import CollectionLoop
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.timesync import ClockTrust
from tests.proc_tree import advance_counters

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "proc-sys" / "rk3588-under-load" / "before"
SYNCED = 1_795_000_000.0      # 2026-11-18, what NTP says
BOOT = 120.0                  # wall == monotonic == 2 minutes after 1970 at boot
INTERVAL = 1.0
RATES = re.compile(r"_per_second$|usage_percent$")

# (rounds to run, wall-clock step applied after them)
STEPS_JUMPY = [(5, SYNCED), (5, 3600.0), (5, -3600.0 + 0.125), (5, 0.0)]
STEPS_CONTROL = [(5, 0.0), (5, 0.0), (5, 0.0), (5, 0.0)]


def run(tmp: Path, steps: list[tuple[int, float]], start_wall: float) -> tuple[
        list[tuple[Sample, int]], SampleQueue]:
    """Collect with the agent's own loop and store path; returns each sample as collected
    with the round it came from, and the database."""
    root = tmp / "tree"
    shutil.copytree(FIXTURE, root)
    settings = parse_config(f"""
device: {{id: jumpy}}
storage: {{path: {tmp / 'agent.db'}}}
remote: {{url: "http://127.0.0.1:9/", enabled: false}}
health: {{listen: "off"}}
monitoring: {{self_metrics: false}}
host: {{proc_root: {root / 'proc'}, sys_root: {root / 'sys'}}}
metrics:
  - {{name: cpu, interval: {INTERVAL}s}}
  - {{name: network, interval: {INTERVAL}s}}
  - {{name: disk, interval: {INTERVAL}s}}
""")
    clock = FakeClock(wall=start_wall, monotonic=BOOT)
    agent = Agent(settings, clock=clock)
    agent.clock_gate.trust = ClockTrust(clock, timesync_dir=str(tmp / "no-timesyncd"), recheck=0.0)
    queue = SampleQueue.open(settings.storage.path)
    collected: list[tuple[Sample, int]] = []
    rounds = 0

    def store(samples: list[Sample]) -> int:
        collected.extend((s, rounds) for s in samples)
        return agent.clock_gate.store(queue, samples)

    loop = CollectionLoop(agent.scheduled, store, clock, logging.getLogger("t"), stamp=agent.stamps.now_ms)
    stop = threading.Event()
    for count, step in steps:
        for _ in range(count):
            loop.run(stop, max_rounds=1)  # due now: one round, no waiting
            rounds += 1
            next_due = min(m.due for m in agent.scheduled)
            # The schedule is monotonic: a wall jump neither brings the next round forward
            # (a burst) nor pushes it an hour away (a stall).
            assert abs(next_due - clock.monotonic() - INTERVAL) < 1e-9
            advance_counters(root, next_due - clock.monotonic())
            clock.advance(next_due - clock.monotonic())
        clock.jump_wall(step)
    loop.run(stop, max_rounds=1)  # one more store: releases anything still held
    return collected, queue


def key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample.name, sample.labels


def test_clock_jumps_and_a_1970_boot_leave_values_alone_and_timestamps_right(tmp_path: Path) -> None:
    jumpy, jumpy_db = run(tmp_path / "jumpy", STEPS_JUMPY, start_wall=BOOT)
    control, control_db = run(tmp_path / "control", STEPS_CONTROL, start_wall=SYNCED + BOOT)
    try:
        assert len(jumpy) == len(control) > 100
        # Same samples, same values, round by round: the wall clock changed nothing.
        assert [(key(s), r, s.value) for s, r in jumpy] == [(key(s), r, s.value) for s, r in control]
        rates = [s for s, _ in jumpy if RATES.search(s.name)]
        assert rates and all(s.value is not None and s.value >= 0 for s in rates)
        network = {s.value for s in rates if s.name == "network.receive_bytes_per_second"}
        assert network == {1000.0}  # 10 * 100 bytes per second, exactly, in every round

        # Timestamps: the control run's, plus the jump in force when the sample was taken;
        # the 1970 rounds included, re-stamped from the monotonic clock once NTP synced.
        # After the step back: 0.9 s after the previous round's stamp, still ahead.
        def shift_ms(round_: int) -> int:
            return 0 if round_ < 10 else 3_600_000 if round_ < 15 else 3_600_000 - 100 * (round_ - 14)

        expected = {(key(c), c.timestamp_ms + shift_ms(r), c.value) for c, r in control}
        stored = {(key(r.sample), r.ts, r.sample.value) for r in jumpy_db.all()}
        assert stored == expected
        assert jumpy_db.held_count() == 0 and len(stored) == len(jumpy)
        assert min(ts for _, ts, _ in stored) > int(SYNCED * 1000)  # no 1970 sample left
    finally:
        jumpy_db.close()
        control_db.close()
