"""The agent's queue figures: counted again only after 100x the last count's duration, so
a long backlog does not cost a full scan every upload cycle; health shows them per class."""

from __future__ import annotations

from pathlib import Path

from belabox_metrics.agent import Agent
from belabox_metrics.clock import FakeClock
from belabox_metrics.config import parse_config
from belabox_metrics.model import Sample
from belabox_metrics.runtime.queue_figures import COST_FACTOR
from belabox_metrics.store.queue import SampleQueue


def test_pending_is_recounted_only_after_a_hundred_times_the_last_counts_cost(tmp_path: Path) -> None:
    settings = parse_config(f"""
device: {{id: t}}
storage: {{path: {tmp_path / 'a.db'}}}
remote: {{url: "http://127.0.0.1:9/api/v1/import", format: vm-jsonl}}
health: {{listen: "off"}}
metrics: [{{name: memory}}]
""")
    clock = FakeClock(wall=1_700_000_000.0, monotonic=100.0)
    agent = Agent(settings, clock=clock)
    queue = SampleQueue.open(settings.storage.path, lanes=agent.series_lanes)
    start_ms = 1_700_000_000_000 - 86_400_000
    queue.append([Sample("srt.rtt_seconds" if i % 4 == 0 else "disk.reads_total", float(i), start_ms + i, ())
                  for i in range(200_000)])
    agent.figures.refresh(queue, force=True)
    assert agent.figures.counted is not None and agent.figures.counted.pending == 200_000
    wait = agent.figures.next_count_at - clock.monotonic()
    assert 0 < wait < COST_FACTOR * 5  # 100x a count that took well under 5 s
    assert agent.health()["pending_by_class"] == {"P0": 50_000, "P3": 150_000}
    queue.append([Sample("srt.rtt_seconds", 1.0, start_ms + 300_000, ())])
    agent.figures.refresh(queue)
    assert agent.figures.counted.pending == 200_000          # not counted again yet
    clock.advance(wait)
    agent.figures.refresh(queue)
    assert agent.figures.counted.pending == 200_001
