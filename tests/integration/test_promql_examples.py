"""Every PromQL example in docs/victoriametrics-setup.md returns data from real agent data.

One real VictoriaMetrics on 127.0.0.1 is loaded by short runs of the real agent
(`metrics-collector run`, subprocesses), uploading with `vm-jsonl`:

- "host-box" reads this machine's /proc and /sys with every registered host collector, the
  seed's mock metrics, the `srt` collector reading the stats files of a real
  srt-live-transmit sender/receiver pair on loopback, and its own self-metrics;
- "rk3588-fixture" reads the captured RK3588 tree (tests/fixtures/proc-sys/rk3588-under-load)
  through `host.proc_root`/`host.sys_root`: thermal zones with trip points and cpufreq
  clusters, which a CI VM does not have.

Then each fenced ```promql block of the doc is run through /api/v1/query and must return at
least one series. An example is skipped only when a collector producing one of its metrics
is not registered (yet), with that reason; never silently.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from belabox_metrics.collectors.base import registry
from belabox_metrics.store.queue import SampleQueue
from tests.helpers import REPO_ROOT, cli, free_port, require_tool
from tests.vm import VictoriaMetrics, vm_available

DOC = REPO_ROOT / "docs" / "victoriametrics-setup.md"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "proc-sys" / "rk3588-under-load" / "after"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
RUN_SECONDS = 6.0
HOST_COLLECTORS = ("cpu", "memory", "disk", "network", "system", "thermal")
# PromQL name prefix -> the collector producing it (None: the agent's own self-metrics).
# Longest prefix first.
PRODUCERS: tuple[tuple[str, str | None], ...] = (
    ("cpu_temperature_", "cpu.temperature"), ("cpu_", "cpu"), ("memory_", "memory"),
    ("disk_", "disk"), ("network_", "network"), ("thermal_", "thermal"), ("system_", "system"),
    ("srt_", "srt"), ("storage_", None), ("uploader_", None), ("collector_", None),
)


def promql_examples(markdown: str) -> list[str]:
    return [block.strip() for block in re.findall(r"^```promql\n(.*?)^```", markdown, re.S | re.M)]


EXAMPLES = promql_examples(DOC.read_text())


def metric_names(query: str) -> set[str]:
    return {word for word in re.findall(r"[a-z_][a-z0-9_]*", query)
            if any(word.startswith(prefix) for prefix, _ in PRODUCERS)}


def producers(query: str) -> set[str]:
    out = set()
    for name in metric_names(query):
        collector = next(c for prefix, c in PRODUCERS if name.startswith(prefix))
        if collector is not None:
            out.add(collector)
    return out


# -- a real SRT link ----------------------------------------------------------------------

def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SrtLink:
    procs: list[subprocess.Popen[bytes]]
    feeder: threading.Thread
    stop: threading.Event
    receiver_stats: Path
    sender_stats: Path

    def close(self) -> None:
        self.stop.set()
        self.feeder.join(timeout=5)
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_srt_link(tool: str, tmp: Path, seconds: float) -> SrtLink:
    """srt-live-transmit receiver (listener) <- sender (caller) <- 250 datagrams/s of UDP."""
    listen_port, input_port, sink_port = udp_port(), udp_port(), udp_port()
    receiver_stats, sender_stats = tmp / "srt-receiver.json", tmp / "srt-sender.json"
    procs = [subprocess.Popen(
        [tool, "-s:250", "-pf:json", f"-statsout:{receiver_stats}",
         f"srt://127.0.0.1:{listen_port}?mode=listener&latency=200", f"udp://127.0.0.1:{sink_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    time.sleep(0.3)
    procs.append(subprocess.Popen(
        [tool, "-s:250", "-pf:json", f"-statsout:{sender_stats}",
         f"udp://127.0.0.1:{input_port}", f"srt://127.0.0.1:{listen_port}?latency=200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    stop = threading.Event()

    def feed() -> None:
        payload = bytes(1316)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            start = time.monotonic()
            for i in range(int(250 * seconds)):
                if stop.is_set():
                    return
                delay = start + i / 250 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sock.sendto(payload, ("127.0.0.1", input_port))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    return SrtLink(procs, feeder, stop, receiver_stats, sender_stats)


# -- the agents ---------------------------------------------------------------------------

def agent_config(tmp: Path, device_id: str, import_url: str, metrics: list[dict[str, object]],
                 host: dict[str, str] | None = None) -> Path:
    config = {
        "device": {"id": device_id},
        "storage": {"path": str(tmp / f"{device_id}.db")},
        "remote": {"url": import_url, "format": "vm-jsonl", "interval": "500ms", "timeout": "2s",
                   "shutdown_grace": "3s"},
        "logging": {"level": "info", "format": "json"},
        "health": {"listen": f"127.0.0.1:{free_port()}"},
        "monitoring": {"self_metrics_interval": "1s"},
        "metrics": metrics,
    }
    if host:
        config["host"] = host
    path = tmp / f"{device_id}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def host_box_metrics(names: set[str], link: SrtLink) -> list[dict[str, object]]:
    metrics: list[dict[str, object]] = [{"name": n, "interval": "1s"} for n in HOST_COLLECTORS
                                        if n in names and n != "thermal"]
    if "thermal" in names and any(Path("/sys/class/thermal").glob("thermal_zone*")):
        metrics.append({"name": "thermal", "interval": "1s", "trip_points": True})
    if "cpu.temperature" in names:
        metrics.append({"name": "cpu.temperature", "interval": "1s", "mock": True})
    if "srt.packet_loss" in names:
        metrics.append({"name": "srt.packet_loss", "interval": "1s", "mock": True})
    if "srt" in names:
        metrics.append({"name": "srt", "interval": "1s", "sources": [
            {"type": "srt-live-transmit", "stats_file": str(link.receiver_stats), "stream": "receiver"},
            {"type": "srt-live-transmit", "stats_file": str(link.sender_stats), "stream": "sender"},
        ]})
    return metrics


def fixture_box_metrics(names: set[str]) -> list[dict[str, object]]:
    metrics: list[dict[str, object]] = [{"name": n, "interval": "1s"} for n in HOST_COLLECTORS
                                        if n in names and n != "thermal"]
    if "thermal" in names:
        metrics.append({"name": "thermal", "interval": "1s", "trip_points": True})
    if "cpu.temperature" in names:
        metrics.append({"name": "cpu.temperature", "interval": "1s"})
    return metrics


def run_agents(configs: list[Path], tmp: Path, seconds: float) -> None:
    agents = []
    for config in configs:
        with (tmp / f"{config.stem}.log").open("ab") as log:
            agents.append(subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)],
                                           env=ENV, stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for agent, config in zip(agents, configs, strict=True):
                assert agent.poll() is None, (tmp / f"{config.stem}.log").read_text()[-3000:]
            time.sleep(0.25)
    finally:
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
        for agent in agents:
            try:
                agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
    for agent, config in zip(agents, configs, strict=True):
        assert agent.returncode == 0, (tmp / f"{config.stem}.log").read_text()[-3000:]


@dataclass
class Loaded:
    vm: VictoriaMetrics
    registered: set[str]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    binary = vm_available() or require_tool("victoria-metrics", "victoria-metrics")
    slt = require_tool("srt-live-transmit", "srt-tools")
    tmp = tmp_path_factory.mktemp("promql")
    vm = VictoriaMetrics(binary, tmp / "vm-data", free_port())
    vm.start()
    link = start_srt_link(slt, tmp, RUN_SECONDS + 2)
    try:
        names = set(registry())
        configs = [
            agent_config(tmp, "host-box", vm.import_url, host_box_metrics(names, link)),
            agent_config(tmp, "rk3588-fixture", vm.import_url, fixture_box_metrics(names),
                         host={"proc_root": str(FIXTURE / "proc"), "sys_root": str(FIXTURE / "sys")}),
        ]
        run_agents(configs, tmp, RUN_SECONDS)
        for config in configs:
            queue = SampleQueue.open(str(tmp / f"{config.stem}.db"))
            try:
                assert queue.pending_count(vm.import_url) == 0, f"{config.stem} did not deliver everything"
            finally:
                queue.close()
        vm.flush()
        yield Loaded(vm, names)
    finally:
        link.close()
        vm.stop()


def query(vm: VictoriaMetrics, promql: str, timeout: float = 10.0) -> list[object]:
    """The result vector; retried briefly, as VM makes fresh rows searchable ~1 s after import."""
    url = f"{vm.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=30) as answer:
            document = json.loads(answer.read())
        assert document["status"] == "success", document
        result: list[object] = document["data"]["result"]
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def test_the_doc_has_examples_for_every_area() -> None:
    assert len(EXAMPLES) >= 20
    needed = {"thermal_zone_celsius", "cpu_usage_percent", "memory_used_bytes",
              "network_transmit_bytes_per_second", "srt_packet_loss_percent", "srt_rtt_seconds",
              "storage_metrics_pending_upload"}
    assert needed <= set().union(*map(metric_names, EXAMPLES))


@pytest.mark.parametrize("promql", EXAMPLES, ids=[f"{i:02d}" for i in range(len(EXAMPLES))])
def test_promql_example_returns_data(loaded: Loaded, promql: str) -> None:
    missing = sorted(producers(promql) - loaded.registered)
    if missing:
        pytest.skip(f"collector(s) {', '.join(missing)} not registered yet; this example needs them")
    assert metric_names(promql), f"no known metric in {promql!r}: add its prefix to PRODUCERS"
    result = query(loaded.vm, promql)
    assert result, f"no data for documented example:\n{promql}"
