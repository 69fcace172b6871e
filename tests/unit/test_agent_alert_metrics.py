"""The self-metrics the fleet alert rules need (deploy/alerts/), on /metrics under the
names the rules use: the size cap, the clock's trust, the health status, watchdog stalls,
the age of the oldest pending sample."""

from __future__ import annotations

from pathlib import Path

from belabox_metrics.agent import Agent
from belabox_metrics.clock import FakeClock
from belabox_metrics.config import parse_config


def exposition_lines(tmp_path: Path) -> dict[str, str]:
    settings = parse_config(f"""
device: {{id: t}}
storage: {{path: {tmp_path / 'a.db'}, max_size: 64MiB}}
remote: {{url: "http://127.0.0.1:9/api/v1/import", format: vm-jsonl}}
health: {{listen: "off"}}
metrics: [{{name: memory}}]
""")
    agent = Agent(settings, clock=FakeClock(wall=1_700_000_000.0, monotonic=100.0))
    lines = [line for line in agent.self_metrics.exposition().splitlines() if not line.startswith("#")]
    return dict(line.rsplit(" ", 1) for line in lines)  # type: ignore[misc]


def test_alerting_self_metrics_are_exposed_with_their_values(tmp_path: Path) -> None:
    values = exposition_lines(tmp_path)
    assert values["storage_max_size_bytes"] == str(64 * 1024 * 1024)
    assert values["time_clock_trusted"] == "1"
    assert values["agent_watchdog_stalls_total"] == "0"
    assert values["storage_oldest_pending_age_seconds"] == "0"
    assert values["agent_health_status"] in {"0", "1", "2"}
    # Before the agent has started (no session yet) there is no session counter to report.
    assert "agent_starts_total" not in values
