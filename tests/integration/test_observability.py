"""Health, self-metrics, structured logs and the systemd watchdog of a real agent process."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from belabox_metrics.clock import SystemClock
from belabox_metrics.model import Sample
from tests.helpers import REPO_ROOT, cli, eventually, free_port, require_tool, wait_for_port
from tests.vm import VictoriaMetrics

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def config(tmp: Path, health_port: int, remote_port: int, extra_metrics: str = "") -> Path:
    path = tmp / "config.yaml"
    path.write_text(f"""
device: {{id: obs-box}}
storage: {{path: {tmp / 'agent.db'}}}
remote: {{url: "http://127.0.0.1:{remote_port}/api/v1/import", format: vm-jsonl, interval: 1s, timeout: 1s,
          retry: {{max_attempts: 1}}}}
logging: {{level: debug, format: json}}
health: {{listen: "127.0.0.1:{health_port}"}}
monitoring: {{self_metrics_interval: 1s}}
metrics:
  - {{name: srt.packet_loss, interval: 500ms, mock: true}}
  - {{name: memory, interval: 1s}}
{extra_metrics}
""")
    return path


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def agent_proc(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start(cfg: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(cfg)], env=env or ENV,
                                stdout=out, stderr=subprocess.STDOUT)


def test_health_endpoints_and_log_fields(tmp_path: Path, victoria_metrics: VictoriaMetrics,
                                         agent_proc: list[subprocess.Popen[bytes]]) -> None:
    health_port = free_port()
    cfg = config(tmp_path, health_port, victoria_metrics.port)
    proc = start(cfg, tmp_path / "agent.log")
    agent_proc.append(proc)
    wait_for_port("127.0.0.1", health_port, proc=proc)

    def healthy() -> dict[str, Any] | None:
        status, body = get(f"http://127.0.0.1:{health_port}/health")
        doc: dict[str, Any] = json.loads(body)
        ok = (status == 200 and doc["status"] == "ok" and str(doc["components"]["uploader"].get("last_success")).endswith("Z")
              and doc["components"]["collectors"]["collectors"]["memory"]["runs"] >= 2)
        return doc if ok else None

    eventually(healthy, 60, "health ok after an upload and two memory rounds")
    assert get(f"http://127.0.0.1:{health_port}/health/live")[0] == 200
    assert get(f"http://127.0.0.1:{health_port}/health/ready")[0] == 200
    assert get(f"http://127.0.0.1:{health_port}/nope")[0] == 404

    # The remote goes away: still alive, no longer ready once uploads are stale (> 2 intervals).
    victoria_metrics.stop()
    eventually(lambda: json.loads(get(f"http://127.0.0.1:{health_port}/health")[1])["status"] == "degraded", 60,
               "degraded once uploads are stale")
    assert get(f"http://127.0.0.1:{health_port}/health/ready")[0] == 503
    assert get(f"http://127.0.0.1:{health_port}/health/live")[0] == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0

    records = [json.loads(line) for line in (tmp_path / "agent.log").read_text().splitlines()]
    uploaded = [r for r in records if r["msg"] == "uploaded"]
    assert uploaded and {"batch_id", "attempt", "http_status", "bytes_sent", "bytes_rcvd", "duration_ms",
                         "count"} <= set(uploaded[0])
    failed = [r for r in records if r["msg"].startswith("upload failed")]
    assert failed and {"error", "error_type", "batch_id", "attempt"} <= set(failed[0])
    collected = [r for r in records if r["msg"] == "collected"]
    assert collected and {"collector", "count", "duration_ms"} <= set(collected[0])
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)


def test_all_collectors_failing_is_error_and_not_ready(tmp_path: Path,
                                                      agent_proc: list[subprocess.Popen[bytes]]) -> None:
    health_port = free_port()
    sys_root = tmp_path / "empty-sys"
    sys_root.mkdir()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
device: {{id: obs-box}}
storage: {{path: {tmp_path / 'agent.db'}}}
remote: {{url: "http://127.0.0.1:9/", enabled: false}}
host: {{sys_root: {sys_root}}}
health: {{listen: "127.0.0.1:{health_port}"}}
monitoring: {{self_metrics: false}}
metrics: [{{name: cpu.temperature, interval: 500ms}}]
""")
    proc = start(cfg, tmp_path / "agent.log")
    agent_proc.append(proc)
    wait_for_port("127.0.0.1", health_port, proc=proc)
    status, body = eventually(lambda: (lambda answer: answer if answer[0] == 503 else None)(
        get(f"http://127.0.0.1:{health_port}/health")), 60, "health error once the collector failed")
    doc = json.loads(body)
    assert status == 503 and doc["status"] == "error"
    assert "no thermal zone" in doc["components"]["collectors"]["collectors"]["cpu.temperature"]["last_error"]
    assert get(f"http://127.0.0.1:{health_port}/health/ready")[0] == 503
    assert get(f"http://127.0.0.1:{health_port}/health/live")[0] == 200  # failing is not hung
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_metrics_exposition_scraped_by_real_vmagent(tmp_path: Path, victoria_metrics: VictoriaMetrics,
                                                    agent_proc: list[subprocess.Popen[bytes]]) -> None:
    vmagent = require_tool("vmagent", "victoria-metrics")
    health_port = free_port()
    cfg = config(tmp_path, health_port, victoria_metrics.port)
    proc = start(cfg, tmp_path / "agent.log")
    agent_proc.append(proc)
    wait_for_port("127.0.0.1", health_port, proc=proc)
    scrape = tmp_path / "scrape.yml"
    scrape.write_text(f"""
scrape_configs:
  - job_name: belabox-agent
    scrape_interval: 1s
    static_configs: [{{targets: ["127.0.0.1:{health_port}"]}}]
""")
    agent_port = free_port()
    scraper = subprocess.Popen([vmagent, f"-promscrape.config={scrape}", "-promscrape.config.strictParse",
                                f"-remoteWrite.url={victoria_metrics.url}/api/v1/write",
                                f"-remoteWrite.tmpDataPath={tmp_path / 'vmagent'}",
                                f"-httpListenAddr=127.0.0.1:{agent_port}", "-loggerLevel=ERROR"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent_proc.append(scraper)
    try:
        deadline = time.monotonic() + 30
        series: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            time.sleep(1)
            victoria_metrics.flush()
            result = victoria_metrics.query('collector_metrics_collected_total{job="belabox-agent"}')
            series = result["data"]["result"]  # type: ignore[index]
            buckets = victoria_metrics.query(
                'uploader_upload_duration_seconds_bucket{job="belabox-agent",le="+Inf"}')["data"]["result"]  # type: ignore[index]
            if series and buckets:
                break
        collectors = {s["metric"]["collector"] for s in series}  # type: ignore[index]
        assert {"srt.packet_loss", "memory"} <= collectors
        # The same self-metrics also travel as ordinary samples through the agent's own uploads.
        stored = victoria_metrics.query('storage_metrics_pending_upload{device_id="obs-box"}')["data"]["result"]  # type: ignore[index]
        assert stored
    finally:
        scraper.send_signal(signal.SIGTERM)
        scraper.wait(timeout=20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


# -- sd_notify and the watchdog ------------------------------------------------------------
class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()

    def times(self, text: str) -> list[float]:
        return [t for t, m in self.messages if text in m]


def test_ready_watchdog_and_stopping_over_a_real_notify_socket(tmp_path: Path,
                                                               agent_proc: list[subprocess.Popen[bytes]]) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
device: {{id: wd-box}}
storage: {{path: {tmp_path / 'agent.db'}}}
remote: {{url: "http://127.0.0.1:9/", enabled: false, interval: 500ms}}
health: {{listen: "off"}}
metrics: [{{name: srt.packet_loss, interval: 200ms, mock: true}}]
""")
    proc = subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(cfg)],
                            env={**ENV, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent_proc.append(proc)
    # WATCHDOG_PID is unset: the pings are meant for this process.
    eventually(lambda: len(notify.times("WATCHDOG=1")) >= 5, 60, "five watchdog pings")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    time.sleep(0.3)
    notify.close()
    assert notify.times("READY=1")
    pings = notify.times("WATCHDOG=1")
    assert len(pings) >= 5  # every 1 s (half of WATCHDOG_USEC)
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    # Within the watchdog's own deadline, with the slack a loaded machine needs.
    assert max(gaps) < 2.0, gaps
    assert notify.times("STOPPING=1") and notify.times("STOPPING=1")[0] > pings[-1] - 0.01


class HangingCollector:
    def __init__(self, release: threading.Event, hang_after: int) -> None:
        self.release, self.calls, self.hang_after = release, 0, hang_after

    def collect(self, now_ms: int) -> list[Sample]:
        self.calls += 1
        if self.calls > self.hang_after:
            self.release.wait(30)  # a collector stuck in a read that never returns
        return [Sample("x", 1.0, now_ms)]


def test_watchdog_pings_stop_when_a_loop_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from belabox_metrics.agent import Agent
    from belabox_metrics.collectors.base import MetricSettings
    from belabox_metrics.config import parse_config
    from belabox_metrics.runtime.collection import ScheduledMetric

    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", "600000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    settings = parse_config(f"""
device: {{id: wd}}
storage: {{path: {tmp_path / 'a.db'}}}
remote: {{url: "http://127.0.0.1:9/", enabled: false, interval: 200ms}}
health: {{listen: "off"}}
monitoring: {{self_metrics: false}}
metrics: [{{name: srt.packet_loss, interval: 200ms, mock: true}}]
""")
    agent = Agent(settings, clock=SystemClock())
    release = threading.Event()
    hanging = HangingCollector(release, hang_after=5)
    agent.scheduled = [ScheduledMetric(MetricSettings("hang", 0.2), hanging, due=time.monotonic())]
    agent.collect_run_budget = 0.5  # seconds, so the test runs in seconds, not a minute
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 15
        while hanging.calls <= 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        hung_at = time.monotonic()
        time.sleep(2.5)
        before = [t for t in notify.times("WATCHDOG=1") if t < hung_at]
        after = [t for t in notify.times("WATCHDOG=1") if t > hung_at + 1.0]
        assert before, "the watchdog was fed while the loops were healthy"
        assert not after, "the watchdog was still fed while the collection loop hung"
        assert not agent.alive()
    finally:
        release.set()
        agent.stop.set()
        runner.join(timeout=20)
        notify.close()
