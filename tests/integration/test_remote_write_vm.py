"""Prometheus remote write (protobuf + snappy) into a real VictoriaMetrics' /api/v1/write.

Samples go through the real Uploader and HttpTransport (and, in the second test, the whole
agent from a config file) and come back from /api/v1/export exactly: names, labels,
timestamps, and values at VictoriaMetrics' 12 significant digits.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from belabox_metrics.clock import SystemClock
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import HttpTransport
from belabox_metrics.upload.uploader import Uploader, UploadPolicy
from tests.helpers import cli, eventually
from tests.integration.test_vm_delivery import DEVICE, ENV, assert_exactly_once, run_agent
from tests.vm import VictoriaMetrics

pytest.importorskip("cramjam", reason="remote-write needs the extra: pip install 'belabox-metrics[remote-write]'")


def write_url(vm: VictoriaMetrics) -> str:
    return f"{vm.url}/api/v1/write"


def at_12_digits(value: float) -> float:
    return float(f"{value:.12g}")


def same_at_12_digits(stored: float, sent: float) -> bool:
    """Equal to 12 significant digits, give or take one unit in the 12th: VictoriaMetrics
    turns a float64 into a decimal mantissa of 12 digits (the /api/v1/import text we send
    is already rounded there; a remote-write double is not, and VM's conversion may land on
    the neighbour)."""
    if sent == 0.0 or stored == sent:
        return stored == sent
    unit = 10.0 ** (math.floor(math.log10(abs(sent))) - 11)
    return abs(stored - sent) < unit * 1.5  # one unit, plus the float error of the subtraction


def varied_samples(now_ms: int, count: int) -> list[Sample]:
    """Values of every shape the collectors make (integers, 2-decimal rates, millidegrees,
    full 17-digit floats, tiny and huge, negative, zero), labels that need sanitising,
    millisecond timestamps that are not on a grid, series interleaved."""
    rng = random.Random(10)
    makers = [
        ("cpu.usage_percent", make_labels(cpu="all"), lambda: round(rng.uniform(0, 100), 2)),
        ("cpu.temperature", make_labels(zone="soc-thermal"), lambda: rng.randint(30_000, 90_000) / 1000),
        ("network.receive_bytes_total", make_labels(interface="wwan0"), lambda: float(rng.randint(0, 2**52))),
        ("srt.rtt_seconds", make_labels(stream="live", source="srtla"), lambda: rng.random() / 3),
        ("system.boot_time_seconds", make_labels(), lambda: 1_760_000_000 + rng.random()),
    ]
    # VictoriaMetrics stores a block of a series' values as decimals with one exponent: 6e23
    # and 1e-9 in one series would come back as 6e23 and 0 (whatever the format). One series each.
    for kind, value in enumerate((0.0, -0.0, -1.5, 1e-9, 6.02214076e23, -273.15)):
        makers.append(("bench.odd", make_labels({"a.b": "x y", "é": "ü", "9": "nine", "kind": str(kind)}),
                       lambda value=value: value))
    out = []
    for i in range(count):
        name, labels, make = makers[i % len(makers)]
        out.append(Sample(name, make(), now_ms - 3_600_000 + (i // len(makers)) * 997 + rng.randint(0, 3), labels))
    return out


def test_uploader_remote_write_comes_back_exactly(victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    now_ms = int(time.time() * 1000)
    samples = varied_samples(now_ms, 6000)
    queue = SampleQueue.open(str(tmp_path / "agent.db"))
    queue.append(samples)
    fmt = wire_format("remote-write", DEVICE)
    uploader = Uploader(queue, HttpTransport(timeout=10), url=write_url(victoria_metrics), fmt=fmt,
                        clock=SystemClock(), log=logging.getLogger("t"), policy=UploadPolicy(max_samples=1000))
    result = uploader.run_cycle()
    assert result.error is None and result.acknowledged == len(samples) and result.dead == 0
    assert uploader.requests_total == 6 and queue.pending_count(uploader.destination) == 0
    queue.close()

    # Spelled out rather than computed with promql_name / promql_label (the code under test).
    names = {"cpu.temperature": "cpu_temperature_celsius"}
    label_names = {"a.b": "a_b", "é": "_", "9": "_9"}
    want = {}
    for s in samples:
        labels = tuple(sorted([("device_id", DEVICE), *((label_names.get(k, k), v) for k, v in s.labels)]))
        want[(names.get(s.name, s.name.replace(".", "_")), labels, s.timestamp_ms)] = at_12_digits(s.value)  # type: ignore[arg-type]
    got: dict[tuple[str, tuple[tuple[str, str], ...], int], float] = {}
    deadline = time.monotonic() + 15
    while True:
        stored = victoria_metrics.samples(f'{{device_id="{DEVICE}"}}')
        got = {(name, labels, ts): at_12_digits(value) for name, labels, ts, value in stored}
        if len(got) >= len(want) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(stored) == len(got) == len(want)  # nothing twice, nothing extra
    assert set(got) == set(want)
    different = [(key, got[key], want[key]) for key in want if not same_at_12_digits(got[key], want[key])]
    assert not different, (len(different), [(k[0], k[2], repr(a), repr(b)) for k, a, b in different[:12]])


def test_agent_with_format_remote_write_delivers_exactly_once(victoria_metrics: VictoriaMetrics,
                                                              tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"""
device: {{id: {DEVICE}}}
storage: {{path: {tmp_path / 'agent.db'}}}
remote:
  url: {write_url(victoria_metrics)}
  format: remote-write
  interval: 500ms
  timeout: 2s
logging: {{level: info, format: json}}
health: {{listen: "off"}}
metrics:
  - {{name: cpu.temperature, interval: 200ms, mock: true}}
  - {{name: srt.packet_loss, interval: 100ms, mock: true}}
  - {{name: memory, interval: 1s}}
""")
    log = tmp_path / "agent.log"
    agent = run_agent(config, log)
    try:
        eventually(lambda: log.read_text().count('"uploaded"') >= 3, 60, "three uploads")
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert '"uploaded"' in text and "upload failed" not in text
    assert_exactly_once(victoria_metrics, tmp_path / "agent.db")
    # verify finds the export next to /api/v1/write and agrees.
    ok = subprocess.run([*cli("metrics-collector"), "verify", "--config", str(config), "--since", "1h",
                         "--settle", "0s"], env=ENV, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "OK: every sent sample is there exactly once" in ok.stdout, ok.stdout + ok.stderr


def test_format_and_url_path_must_match(tmp_path: Path) -> None:
    """VictoriaMetrics answers 204 to a remote-write body sent to /api/v1/import and keeps
    nothing: the config refuses that pairing (and the opposite one) up front."""
    for fmt, path in (("remote-write", "/api/v1/import"), ("vm-jsonl", "/api/v1/write")):
        config = tmp_path / "config.yaml"
        config.write_text(f"device: {{id: b}}\nstorage: {{path: {tmp_path / 'a.db'}}}\n"
                          f"remote: {{url: 'http://127.0.0.1:8428{path}', format: {fmt}}}\n"
                          "metrics: [{name: cpu}]\n")
        done = subprocess.run([*cli("metrics-collector"), "check-config", "--config", str(config)],
                              env=ENV, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"remote.url: {path} does not take format {fmt}" in done.stderr
