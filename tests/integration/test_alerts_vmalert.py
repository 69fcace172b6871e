"""The alert rules evaluated by a real vmalert over what a real agent put into a real
VictoriaMetrics, notifying a webhook receiver of our own:

    fixture /proc + /sys (the SoC heats up) --\\
    srt-live-transmit --srt--> lossy relay --srt--> srt-live-transmit (stats file) --> metrics-collector
        --vm-jsonl--> VictoriaMetrics <--queries-- vmalert --/api/v2/alerts--> webhook (this test)

deploy/alerts/belabox.rules.yml is loaded with its windows and `for:` durations shortened to
seconds (the thresholds stay the documented defaults): BelaboxTemperatureNearThrottle
(against the passive trip point the agent reports, 85 °C) and BelaboxSrtPacketLoss (the relay
drops a fifth of the data packets) fire naming the device, and resolve once the SoC cools
and the relay stops dropping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, cli, free_port, require_tool, wait_for_port
from tests.integration.test_srt_real import LossyRelay, udp_port
from tests.vm import VictoriaMetrics

RULES = REPO_ROOT / "deploy" / "alerts" / "belabox.rules.yml"
BASE_TREE = REPO_ROOT / "tests" / "fixtures" / "proc-sys" / "rk3588-under-load" / "before"
DEVICE = "alert-box-7"
SOC_ZONE = "thermal_zone0"  # soc-thermal: passive trip points 75 and 85 °C, critical 115 °C
PACKET, RATE = 1316, 250
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def short_rules(text: str) -> str:
    """The shipped rules with minutes turned into seconds, for a test that lasts a minute."""
    text = re.sub(r"\[(1|2|5)m\]", "[10s]", text)
    text = re.sub(r"for: \d+m", "for: 3s", text)
    return text.replace("interval: 30s", "interval: 1s")


class Webhook:
    """An Alertmanager stand-in: keeps every alert vmalert posts, with when it came."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, object]]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.time()
                with outer.lock:
                    outer.received.extend((now, alert) for alert in json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, name: str) -> list[tuple[float, dict[str, object]]]:
        with self.lock:
            return [(t, a) for t, a in self.received
                    if isinstance(a.get("labels"), dict) and a["labels"].get("alertname") == name]  # type: ignore[union-attr]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ends(alert: dict[str, object]) -> float:
    return datetime.fromisoformat(str(alert["endsAt"]).replace("Z", "+00:00")).timestamp()


def firing(hook: Webhook, name: str, since: float) -> dict[str, object] | None:
    """The newest notification of ``name`` for our device that says it is firing now."""
    for received, alert in reversed(hook.alerts(name)):
        labels = alert["labels"]
        if received >= since and isinstance(labels, dict) and labels.get("device_id") == DEVICE \
                and ends(alert) > received:
            return alert
    return None


def resolved(hook: Webhook, name: str, since: float) -> dict[str, object] | None:
    for received, alert in hook.alerts(name):
        labels = alert["labels"]
        if received >= since and isinstance(labels, dict) and labels.get("device_id") == DEVICE \
                and ends(alert) <= received:
            return alert
    return None


def wait_until(what: str, check: object, timeout: float, procs: dict[str, subprocess.Popen[bytes]]) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}"
        found = check()  # type: ignore[operator]
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


class Heater:
    """Moves the fixture SoC zone's temperature 2 °C per half second towards ``target``."""

    def __init__(self, temp: Path) -> None:
        self.temp = temp
        self.celsius = 52.0
        self.target = 52.0
        self.stop = threading.Event()
        self.fd = os.open(temp, os.O_WRONLY)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            step = max(-2.0, min(2.0, self.target - self.celsius))
            self.celsius += step
            # Same length every time, written in place: a reader sees the old or the new value.
            os.pwrite(self.fd, f"{int(self.celsius * 1000):06d}\n".encode(), 0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        os.close(self.fd)


def feed(port: int, stop: threading.Event) -> None:
    payload = bytes(range(256)) * 5 + bytes(PACKET - 1280)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        for i in range(RATE * 600):  # bounded: at most 10 minutes
            if stop.is_set():
                return
            delay = start + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sock.sendto(payload, ("127.0.0.1", port))


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "host"
    shutil.copytree(BASE_TREE, root)
    temp = root / "sys" / "class" / "thermal" / SOC_ZONE / "temp"
    temp.write_text("052000\n")
    yield root


def write_config(tmp: Path, root: Path, vm: VictoriaMetrics, stats: Path, health_port: int) -> Path:
    config = tmp / "config.yaml"
    config.write_text(f"""
device: {{id: {DEVICE}}}
storage: {{path: {tmp / 'agent.db'}}}
host: {{proc_root: {root / 'proc'}, sys_root: {root / 'sys'}}}
remote:
  url: {vm.import_url}
  format: vm-jsonl
  interval: 1s
  timeout: 5s
  shutdown_grace: 5s
  bandwidth: {{live_hold: 2s}}
health: {{listen: "127.0.0.1:{health_port}"}}
monitoring: {{self_metrics_interval: 2s}}
logging: {{level: info, format: json}}
metrics:
  - {{name: thermal, interval: 1s, trip_points: true}}
  - {{name: cpu, interval: 1s}}
  - name: srt
    interval: 1s
    sources:
      - {{type: srt-live-transmit, stats_file: {stats}, stream: receiver, counters: interval}}
""")
    return config


def test_vmalert_fires_and_resolves_temperature_and_srt_loss(
        tmp_path: Path, tree: Path, victoria_metrics: VictoriaMetrics) -> None:
    vmalert = require_tool("vmalert", "victoria-metrics")
    slt = require_tool("srt-live-transmit", "srt-tools")
    rules = tmp_path / "rules.yml"
    rules.write_text(short_rules(RULES.read_text()))
    hook = Webhook()
    heater = Heater(tree / "sys" / "class" / "thermal" / SOC_ZONE / "temp")
    listen_port, input_port, sink_port = udp_port(), udp_port(), udp_port()
    stats = tmp_path / "recv.json"
    relay = LossyRelay(listen_port, drop_share=0.0)
    relay.thread.start()
    stop_feed = threading.Event()
    feeder = threading.Thread(target=feed, args=(input_port, stop_feed), daemon=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in ("receiver", "sender", "agent", "vmalert")}
    try:
        procs["receiver"] = subprocess.Popen(
            [slt, "-s:250", "-pf:json", f"-statsout:{stats}",
             f"srt://127.0.0.1:{listen_port}?mode=listener&latency=200", f"udp://127.0.0.1:{sink_port}"],
            stdout=logs["receiver"], stderr=subprocess.STDOUT)
        procs["sender"] = subprocess.Popen(
            [slt, f"udp://127.0.0.1:{input_port}", f"srt://127.0.0.1:{relay.port}?latency=200"],
            stdout=logs["sender"], stderr=subprocess.STDOUT)
        feeder.start()
        health_port = free_port()
        config = write_config(tmp_path, tree, victoria_metrics, stats, health_port)

        def start_agent() -> None:
            procs["agent"] = subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)], env=ENV,
                                              stdout=logs["agent"], stderr=subprocess.STDOUT)
            wait_for_port("127.0.0.1", health_port, timeout=60, proc=procs["agent"])

        def stop_agent() -> None:
            agent = procs.pop("agent")
            agent.terminate()
            assert agent.wait(timeout=30) == 0

        start_agent()
        vmalert_port = free_port()
        procs["vmalert"] = subprocess.Popen(
            [vmalert, f"-rule={rules}", f"-datasource.url={victoria_metrics.url}",
             f"-remoteWrite.url={victoria_metrics.url}", "-remoteWrite.flushInterval=1s",
             f"-notifier.url=http://127.0.0.1:{hook.port}", "-evaluationInterval=1s",
             f"-httpListenAddr=127.0.0.1:{vmalert_port}", "-loggerLevel=WARN"],
            stdout=logs["vmalert"], stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", vmalert_port, timeout=60, proc=procs["vmalert"])

        # Healthy first: a cool SoC and a clean link raise neither alert.
        wait_until("the agent's SRT and thermal samples and vmalert's thresholds in VictoriaMetrics", lambda: all(
            victoria_metrics.query(query)["data"]["result"]  # type: ignore[index]
            for query in (f'srt_packet_loss_percent{{device_id="{DEVICE}"}}',
                          f'thermal_zone_celsius{{device_id="{DEVICE}"}}',
                          f'thermal_trip_point_celsius{{device_id="{DEVICE}"}}',
                          "belabox:threshold:srt_loss_percent")), 90, procs)
        healthy_since = time.time()
        wait_until("a few evaluations over the healthy series", lambda: time.time() > healthy_since + 8, 30, procs)
        assert firing(hook, "BelaboxTemperatureNearThrottle", 0) is None
        assert firing(hook, "BelaboxSrtPacketLoss", 0) is None

        # The cause: the SoC heats to 84 °C (trip 85, margin 5) and the relay drops 20 %.
        started = time.time()
        heater.target = 84.0
        relay.drop_share = 0.2
        hot = wait_until("BelaboxTemperatureNearThrottle firing",
                         lambda: firing(hook, "BelaboxTemperatureNearThrottle", started), 120, procs)
        lossy = wait_until("BelaboxSrtPacketLoss firing",
                           lambda: firing(hook, "BelaboxSrtPacketLoss", started), 120, procs)
        for alert, zone_or_stream in ((hot, "soc-thermal"), (lossy, "receiver")):
            assert isinstance(alert, dict)
            labels, notes = alert["labels"], alert["annotations"]
            assert isinstance(labels, dict) and isinstance(notes, dict)
            assert labels["device_id"] == DEVICE and labels["severity"] == "warning"
            assert zone_or_stream in labels.values()
            assert str(notes["summary"]).startswith(f"{DEVICE}: ")
            assert DEVICE in str(notes["description"])
            assert str(notes["runbook_url"]).startswith("docs/alerts.md#belabox")
        value = float(re.search(r"averages ([\d.]+) °C", str(hot["annotations"]["description"])).group(1))  # type: ignore[index,union-attr]
        assert 80.0 <= value <= 85.0
        loss = float(re.search(r"averages ([\d.]+) %", str(lossy["annotations"]["description"])).group(1))  # type: ignore[index,union-attr]
        assert loss > 5.0

        # The cause goes: both resolve.
        cooled = time.time()
        heater.target = 50.0
        relay.drop_share = 0.0
        wait_until("BelaboxTemperatureNearThrottle resolved",
                   lambda: resolved(hook, "BelaboxTemperatureNearThrottle", cooled), 120, procs)
        wait_until("BelaboxSrtPacketLoss resolved",
                   lambda: resolved(hook, "BelaboxSrtPacketLoss", cooled), 120, procs)

        # The box goes quiet in the middle of the stream: BelaboxDeviceSilent (window 10 s
        # here, 5 minutes shipped) fires naming it, and resolves when it reports again.
        stop_agent()
        quiet = time.time()
        silent = wait_until("BelaboxDeviceSilent firing", lambda: firing(hook, "BelaboxDeviceSilent", quiet),
                            120, procs)
        assert isinstance(silent, dict)
        assert silent["annotations"]["summary"] == f"{DEVICE} went silent while streaming"  # type: ignore[index]
        back = time.time()
        start_agent()
        wait_until("BelaboxDeviceSilent resolved", lambda: resolved(hook, "BelaboxDeviceSilent", back), 120, procs)

        # The stream ends, then the box is switched off: that is not "silent while streaming".
        stop_feed.set()
        wait_until("the agent saying the stream ended", lambda: [
            r for r in victoria_metrics.query(f'last_over_time(uploader_stream_live{{device_id="{DEVICE}"}}[1m])')[
                "data"]["result"] if r["value"][1] == "0"], 90, procs)  # type: ignore[index]
        stop_agent()
        off = time.time()
        # Long enough for the shortened rule to have fired (10 s window + 3 s for) twice over.
        wait_until("30 s of evaluations after the switch-off", lambda: time.time() > off + 30, 60, procs)
        assert firing(hook, "BelaboxDeviceSilent", off) is None

        # Every rule of the file evaluates in vmalert against VictoriaMetrics without an error.
        with urllib.request.urlopen(f"http://127.0.0.1:{vmalert_port}/api/v1/rules", timeout=10) as answer:
            groups = json.loads(answer.read())["data"]["groups"]
        rules_seen = [rule for group in groups for rule in group["rules"]]
        assert len(rules_seen) == RULES.read_text().count("- alert:") + RULES.read_text().count("- record:")
        assert [(r["name"], r["lastError"]) for r in rules_seen if r.get("lastError")] == []

        # The self-metrics the agent rules use reached VictoriaMetrics under their names.
        for name in ("agent_starts_total", "agent_health_status", "agent_watchdog_stalls_total",
                     "storage_max_size_bytes", "storage_oldest_pending_age_seconds", "time_clock_trusted"):
            assert victoria_metrics.query(f'{name}{{device_id="{DEVICE}"}}')["data"]["result"], name  # type: ignore[index]
    finally:
        stop_feed.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if feeder.is_alive():
            feeder.join(timeout=5)
        relay.close()
        heater.close()
        hook.close()
        for log in logs.values():
            log.close()
