"""The agent's flash writes as a self-metric (issue 21): write_bytes of /proc/self/io."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from belabox_metrics.agent import Agent
from belabox_metrics.clock import FakeClock
from belabox_metrics.config import parse_config
from belabox_metrics.selfmetrics import written_bytes

# /proc/self/io as Linux 6.18 shows it (captured from a shell on the development VM).
PROC_IO = """rchar: 6976
wchar: 0
syscr: 10
syscw: 0
read_bytes: 0
write_bytes: 819200
cancelled_write_bytes: 0
"""


def test_write_bytes_is_read_from_proc_io(tmp_path: Path) -> None:
    io = tmp_path / "io"
    io.write_text(PROC_IO)
    assert written_bytes(str(io)) == 819200
    assert written_bytes(str(tmp_path / "absent")) is None  # macOS, or no task I/O accounting
    io.write_text("rchar: 1\n")
    assert written_bytes(str(io)) is None


def agent(tmp_path: Path) -> Agent:
    settings = parse_config(f"""
device: {{id: t}}
storage: {{path: {tmp_path / 'a.db'}}}
remote: {{url: "http://127.0.0.1:9/api/v1/import", format: vm-jsonl}}
health: {{listen: "off"}}
metrics: [{{name: memory}}]
""")
    return Agent(settings, clock=FakeClock(wall=1_700_000_000.0, monotonic=100.0))


def exposed(a: Agent) -> dict[str, str]:
    lines = [line for line in a.self_metrics.exposition().splitlines() if not line.startswith("#")]
    return dict(line.rsplit(" ", 1) for line in lines)  # type: ignore[misc]


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_metrics_and_health_show_what_the_process_wrote(tmp_path: Path) -> None:
    a = agent(tmp_path)
    before = float(exposed(a)["agent_written_bytes_total"])
    with (tmp_path / "f").open("wb") as f:  # 64 KiB written and flushed to the disk
        f.write(os.urandom(65536))
        f.flush()
        os.fsync(f.fileno())
    after = float(exposed(a)["agent_written_bytes_total"])
    if after == before == 0:
        pytest.skip("this filesystem reports no write_bytes (tmpfs, some overlays)")
    assert after - before >= 65536
    written = a.snapshot().extra["written_bytes"]
    assert isinstance(written, int) and written >= after
