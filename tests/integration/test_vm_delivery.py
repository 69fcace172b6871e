"""Exactly-once delivery into a real VictoriaMetrics on loopback.

Exactly once = at-least-once from the agent (acknowledge only after a 2xx) + idempotence at
the server (``-dedup.minScrapeInterval=1ms``: a re-sent sample is a no-op). The tests prove
both halves, including that without the flag VM would store a re-sent batch twice.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from belabox_metrics.clock import SystemClock
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.encode import VmSeriesHeads, gzip_bytes, promql_name, vm_jsonl, wire_format
from belabox_metrics.upload.transport import HttpTransport
from belabox_metrics.upload.uploader import Uploader, UploadPolicy
from tests.helpers import IN_CI, REPO_ROOT, cli, eventually, free_port
from tests.vm import VictoriaMetrics, vm_available

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
KILL_ROUNDS = int(os.environ.get("BELABOX_KILL_ROUNDS", "30"))
DEVICE = "vm-box"


def stored_keys(db: Path) -> set[tuple[str, tuple[tuple[str, str], ...], int, float]]:
    queue = SampleQueue.open(str(db))
    try:
        return {(promql_name(r.sample.name), tuple(sorted([("device_id", DEVICE), *r.sample.labels])), r.ts,
                 float(r.sample.value)) for r in queue.all() if r.sample.value is not None}
    finally:
        queue.close()


def backlog(db: Path, count: int, series: int = 20) -> None:
    """A backlog of ``count`` samples over the last hour, as an outage would leave it."""
    queue = SampleQueue.open(str(db))
    now_ms = int(time.time() * 1000)
    rng = random.Random(count)
    queue.append([Sample("bench.value", round(rng.uniform(0, 100), 2), now_ms - 3_600_000 + (i // series) * 10,
                         make_labels(n=str(i % series))) for i in range(count)])
    queue.close()


def post(vm: VictoriaMetrics, body: bytes) -> int:
    transport = HttpTransport(timeout=10)
    try:
        return transport.post(vm.import_url, gzip_bytes(body), {"Content-Encoding": "gzip"}).status
    finally:
        transport.close()


def test_same_chunk_twice_stores_nothing_new(victoria_metrics: VictoriaMetrics) -> None:
    now_ms = int(time.time() * 1000)
    samples = [Sample("cpu.temperature", 40.0 + i, now_ms - 60_000 + i * 1000, make_labels(zone="soc"))
               for i in range(50)]
    body = vm_jsonl(VmSeriesHeads(DEVICE), samples)
    assert post(victoria_metrics, body) == 204
    first = victoria_metrics.samples()
    assert post(victoria_metrics, body) == 204
    assert victoria_metrics.samples() == first and len(first) == 50


def test_without_dedup_flag_vm_would_store_a_resent_batch_twice(tmp_path: Path) -> None:
    binary = vm_available()
    if binary is None:
        if IN_CI:
            pytest.fail("victoria-metrics missing in CI")
        pytest.skip("victoria-metrics not installed")
    vm = VictoriaMetrics(binary, tmp_path / "vm-nodedup", free_port(), dedup=False)
    vm.start()
    try:
        now_ms = int(time.time() * 1000)
        body = vm_jsonl(VmSeriesHeads(DEVICE), [Sample("x", 1.0, now_ms - 1000)])
        post(vm, body)
        vm.flush()
        post(vm, body)
        assert len(vm.samples()) == 2  # the reason the flag is required
    finally:
        vm.stop()


def test_uploader_delivers_a_backlog_exactly_once(victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    backlog(db, 20_000)
    queue = SampleQueue.open(str(db))
    uploader = Uploader(queue, HttpTransport(timeout=10), url=victoria_metrics.import_url,
                        fmt=wire_format("vm-jsonl", DEVICE), clock=SystemClock(), log=logging.getLogger("t"),
                        policy=UploadPolicy(max_samples=3000))
    result = uploader.run_cycle()
    assert result.error is None and result.acknowledged == 20_000
    assert queue.pending_count(uploader.destination) == 0
    queue.close()
    in_vm = victoria_metrics.samples('{__name__="bench_value"}')
    assert len(in_vm) == 20_000 and set(in_vm) == stored_keys(db)


def write_config(tmp: Path, url: str, interval: str = "1s", batch: int = 2000) -> Path:
    config = tmp / "config.yaml"
    config.write_text(f"""
device: {{id: {DEVICE}}}
storage: {{path: {tmp / 'agent.db'}}}
health: {{listen: "off"}}
remote:
  url: {url}
  format: vm-jsonl
  interval: {interval}
  timeout: 2s
  batch_size: {batch}
  shutdown_grace: 5s
  retry: {{max_attempts: 2, backoff_base: 100ms, backoff_max: 500ms}}
logging: {{level: info, format: json}}
metrics:
  - {{name: cpu.temperature, interval: 200ms, mock: true}}
  - {{name: srt.packet_loss, interval: 100ms, mock: true}}
""")
    return config


def run_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)], env=ENV,
                                stdout=out, stderr=subprocess.STDOUT)


def drain_and_stop(config: Path, log: Path, db: Path, url: str, timeout: float = 60) -> None:
    """Run the agent until nothing is pending, then SIGTERM it (exit 0)."""
    agent = run_agent(config, log)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            queue = SampleQueue.open(str(db))
            try:
                left = queue.pending_count(url)
            finally:
                queue.close()
            if left == 0:
                break
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def assert_exactly_once(vm: VictoriaMetrics, db: Path) -> None:
    """Every stored sample is in VM exactly once, with its value. Values compare to 12
    significant digits: VM stores a decimal mantissa and exponent, so the 17th digit of a
    float may come back different."""
    local = {(n, labels, ts): v for n, labels, ts, v in stored_keys(db)}
    # VM makes the newest rows searchable with a delay even after a force_flush: poll a
    # little (bounded) before judging.
    deadline = time.monotonic() + 15
    while True:
        in_vm = vm.samples(f'{{device_id="{DEVICE}"}}')
        seen = {(n, labels, ts) for n, labels, ts, _ in in_vm}
        if set(local) <= seen or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    counts = Counter((n, labels, ts) for n, labels, ts, _ in in_vm)
    assert max(counts.values()) == 1, "a sample is stored twice"
    missing = set(local) - seen
    assert not missing, f"{len(missing)} of {len(local)} stored samples never reached VM, e.g. {sorted(missing)[:3]}"
    assert seen == set(local), f"in VM but never stored: {sorted(seen - set(local))[:3]}"
    for n, labels, ts, value in in_vm:
        assert math.isclose(value, local[(n, labels, ts)], rel_tol=1e-12, abs_tol=1e-12), (n, ts, value)


def test_vm_down_then_up_every_sample_arrives_once(victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    config = write_config(tmp_path, victoria_metrics.import_url)
    log = tmp_path / "agent.log"
    agent = run_agent(config, log)
    try:
        eventually(lambda: '"uploaded"' in log.read_text(), 60, "a first upload")
        victoria_metrics.stop()           # the uplink drops
        # Collection goes on, uploads fail.
        eventually(lambda: "upload failed" in log.read_text(), 60, "a failed upload while VM is down")
        victoria_metrics.start()           # and comes back
        uploaded = log.read_text().count('"uploaded"')
        eventually(lambda: log.read_text().count('"uploaded"') > uploaded, 60, "an upload after VM came back")
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    text = log.read_text()
    assert "upload failed" in text
    assert_exactly_once(victoria_metrics, tmp_path / "agent.db")


def test_sigkill_during_upload_loses_and_duplicates_nothing(victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    """SIGKILL the agent at random instants while it drains a backlog and keeps collecting,
    KILL_ROUNDS times in a row (BELABOX_KILL_ROUNDS=1000 for the long run)."""
    db = tmp_path / "agent.db"
    backlog(db, 60_000)
    config = write_config(tmp_path, victoria_metrics.import_url, interval="200ms", batch=1500)
    log = tmp_path / "agent.log"
    rng = random.Random(42)
    killed_mid_upload = 0
    for _ in range(KILL_ROUNDS):
        agent = run_agent(config, log)
        time.sleep(rng.uniform(0.4, 1.6))
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        killed_mid_upload += 1
    drain_and_stop(config, log, db, victoria_metrics.import_url)
    assert killed_mid_upload == KILL_ROUNDS
    assert log.read_text().count('"msg": "uploaded"') > KILL_ROUNDS  # uploads really were under way
    assert_exactly_once(victoria_metrics, db)


def test_verify_reports_missing_samples(victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    config = write_config(tmp_path, victoria_metrics.import_url)
    db = tmp_path / "agent.db"
    backlog(db, 2000)
    drain_and_stop(config, tmp_path / "agent.log", db, victoria_metrics.import_url)
    assert_exactly_once(victoria_metrics, db)  # waits until VM shows the newest rows
    ok = subprocess.run([*cli("metrics-collector"), "verify", "--config", str(config), "--since", "2h",
                         "--settle", "0s"],
                        env=ENV, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "missing 0; duplicated 0" in ok.stdout and "OK" in ok.stdout
    # Lose one series at the server: verify must notice (the 204 proved nothing).
    import urllib.request
    urllib.request.urlopen(f"{victoria_metrics.url}/api/v1/admin/tsdb/delete_series?match[]="
                           "%7B__name__%3D%22bench_value%22,n%3D%223%22%7D", timeout=10).close()
    bad = subprocess.run([*cli("metrics-collector"), "verify", "--config", str(config), "--since", "2h",
                          "--settle", "0s"],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "missing 100;" in bad.stdout and "PROBLEMS FOUND" in bad.stdout
