"""The Milestone 1 pipeline as real processes on loopback: metrics-collector collects into
SQLite and uploads to metrics-receiver; after SIGTERM to both, the receiver holds exactly
the samples the collector stored: none lost, none duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from belabox_metrics.receiver.storage import read_samples
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.timefmt import format_ms
from tests.helpers import REPO_ROOT, cli, eventually, free_port, wait_for_port

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def write_config(tmp: Path, port: int, remote_interval: str = "1s") -> Path:
    config = tmp / "config.yaml"
    config.write_text(f"""
device: {{id: e2e-box}}
storage: {{path: {tmp / 'agent.db'}}}
health: {{listen: "off"}}
remote:
  url: http://127.0.0.1:{port}/api/metrics
  interval: {remote_interval}
  timeout: 2s
  shutdown_grace: 5s
logging: {{level: debug, format: json}}
metrics:
  - {{name: cpu.temperature, interval: 1s, mock: true}}
  - {{name: srt.packet_loss, interval: 500ms, mock: true}}
""")
    return config


def start_receiver(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*cli("metrics-receiver"), "--listen", f"127.0.0.1:{port}",
                             "--db", str(tmp / "receiver.db")], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_port("127.0.0.1", port, proc=proc)
    return proc


def start_collector(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)], env=ENV,
                                stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


def agent_samples(db: Path) -> set[tuple[str, str, tuple[tuple[str, str], ...], int, float]]:
    queue = SampleQueue.open(str(db))
    try:
        return {("e2e-box", r.sample.name, r.sample.labels, r.ts, r.sample.value) for r in queue.all()
                if r.sample.value is not None}
    finally:
        queue.close()


def stored_count(db: Path) -> int:
    if not db.exists():
        return 0
    queue = SampleQueue.open(str(db))
    try:
        return queue.count()
    finally:
        queue.close()


def received_count(db: Path) -> int:
    return len(read_samples(db)) if db.exists() else 0


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_collector_to_receiver_no_loss_no_duplicates(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    procs.append(start_receiver(tmp_path, port))
    collector = start_collector(write_config(tmp_path, port), tmp_path / "agent.log")
    procs.append(collector)
    eventually(lambda: stored_count(tmp_path / "agent.db") >= 8 and received_count(tmp_path / "receiver.db") > 0,
               60, "8 samples stored and an upload received")
    assert stop(collector) == 0, (tmp_path / "agent.log").read_text()
    assert stop(procs[0]) == 0

    stored = agent_samples(tmp_path / "agent.db")
    received = read_samples(tmp_path / "receiver.db")
    assert len(stored) >= 8
    assert {s[1] for s in stored} == {"cpu.temperature", "srt.packet_loss"}
    assert len(received) == len(set(received)), "the receiver stored a duplicate"
    assert set(received) == stored
    # Mock data can never pass for real data.
    assert all(dict(labels).get("source") == "mock" for _, _, labels, _, _ in stored)

    query = subprocess.run([*cli("metrics-collector"), "query", "--config", str(tmp_path / "config.yaml"),
                            "--last", "1000"], env=ENV, capture_output=True, text=True, timeout=60)
    assert query.returncode == 0, query.stderr
    for _, name, _, timestamp_ms, _ in stored:
        assert f"{format_ms(timestamp_ms)}  {name}" in query.stdout
    assert f"{len(stored)} stored, 0 not yet uploaded" in query.stdout


def test_receiver_down_then_up_nothing_lost(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    collector = start_collector(write_config(tmp_path, port), tmp_path / "agent.log")
    procs.append(collector)
    log = tmp_path / "agent.log"
    eventually(lambda: log.exists() and "Connection refused" in log.read_text() and stored_count(tmp_path / "agent.db") >= 10,
               60, "failed uploads (connection refused) and 10 samples stored")
    procs.append(start_receiver(tmp_path, port))
    eventually(lambda: received_count(tmp_path / "receiver.db") >= 10, 60, "the backlog received")
    assert stop(collector) == 0
    assert stop(procs[1]) == 0
    log = (tmp_path / "agent.log").read_text()
    assert "upload failed" in log and "Connection refused" in log
    stored = agent_samples(tmp_path / "agent.db")
    received = read_samples(tmp_path / "receiver.db")
    assert len(stored) >= 10
    assert set(received) == stored and len(received) == len(stored)


def test_second_instance_on_same_database_exits_1(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    config = write_config(tmp_path, free_port())
    first = start_collector(config, tmp_path / "first.log")
    procs.append(first)
    deadline = time.monotonic() + 20
    while not (tmp_path / "agent.db").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    second = subprocess.run([*cli("metrics-collector"), "run", "--config", str(config)], env=ENV,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"PID {first.pid}" in second.stderr
    assert stop(first) == 0
