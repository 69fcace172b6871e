"""docs/metrics.md names every metric the agent emits.

The real agent runs with every collector: host collectors on the RK3588 fixture tree, `srt`
and `srt.packet_loss` on every source type (srt-live-transmit stats files fed with the real
captures, SLS/OpenIRL/MediaMTX/srtla answers from the fixtures over HTTP, a belaUI websocket
speaking belaUI's protocol), self-metrics, a clock-skew reference, uploads into the real
metrics-receiver. Every name it stores in its database and every name it exposes on
/metrics must be in docs/metrics.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from belabox_metrics.naming import promql_name
from tests.helpers import REPO_ROOT, cli, free_port, wait_for_port
from tests.integration.test_belaui_ws import PASSWORD, belaui_server, secret, source
from tests.unit.test_srt_support import ScriptedServer, fixture_text, http_server

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
DOC = REPO_ROOT / "docs" / "metrics.md"
# Two real readings 5 s apart: the agent starts on `before`, then the files change in place
# to `after` (rates and usage percent need two readings that differ).
HOST_CASE = REPO_ROOT / "tests" / "fixtures" / "proc-sys" / "rk3588-under-load"
NAME = r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+"
HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")
# One name from each collector and each source type, and the self-metrics that need an
# upload and a skew check first: once all are stored, everything has had its turn.
AWAITED = {
    "cpu.usage_percent", "cpu.frequency_hertz", "memory.total_bytes", "disk.reads_per_second",
    "network.receive_bytes_per_second", "thermal.trip_point_celsius", "system.load1",
    "cpu.temperature", "srt.packet_loss", "srt.send_rate_bits_per_second",
    "srt.receive_rate_bits_per_second", "srt.stream_bitrate_bits_per_second", "srt.latency_seconds",
    "srt.link_bandwidth_bits_per_second", "srtla.groups", "belabox.soc_temperature_celsius",
    "belabox.modem_network", "uploader.upload_duration_seconds_count", "time.skew_ms",
    "collector.collection_duration_seconds_bucket",
}


def documented() -> tuple[set[str], set[str]]:
    """(every name in a table's first column or in the srtla pass-through paragraph,
    the histograms among them)."""
    names: set[str] = set()
    histograms: set[str] = set()
    text = DOC.read_text(encoding="utf-8")
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2:
            continue
        found = re.findall(rf"`({NAME})(?:\{{[^`]*\}})?`", cells[0])
        names.update(found)
        if cells[1] == "histogram":
            histograms.update(found)
    # srtla: "every srtla_* series ... passed through as srtla.*", with the names listed.
    names.update(re.findall(r"`(srtla\.[a-z0-9_]+)(?:\{[^`]*\})?`", text))
    return names, histograms


def exposed(name: str, histograms: set[str]) -> set[str]:
    out = {promql_name(name)}
    if name in histograms:
        out |= {promql_name(name) + part for part in HISTOGRAM_PARTS}
    return out


class Feeder:
    """What a streaming box's sources do over time: srt-live-transmit appends a stats line
    per interval (the real captures, again and again), the servers' counters move."""

    def __init__(self, tmp: Path, server: ScriptedServer) -> None:
        self.server = server
        self.files = {tmp / "slt-send.json": fixture_text("slt_sender_lossy_interval.json").strip(),
                      tmp / "slt-recv.json": fixture_text("slt_receiver_lossy_interval.json").strip()}
        for path in self.files:
            path.write_text("")
        self.mediamtx = json.loads(fixture_text("mediamtx_srtconns_list_CONSTRUCTED.json"))
        self.sls = json.loads(fixture_text("irl-srt-server-real/open_live_publisher_2.json"))
        server.set("/stats/play_abc", fixture_text("openirl-real/stats_modern_live_1.json"))
        server.set("/metrics", fixture_text("srtla-real/metrics_streaming_2.txt"), content_type="text/plain")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _tick(self) -> None:
        for path, line in self.files.items():
            with path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        for item in self.mediamtx["items"]:
            item["packetsReceived"] += 500
            item["packetsReceivedLoss"] += 5
        self.server.set("/v3/srtconns/list", json.dumps(self.mediamtx))
        publisher = self.sls["publishers"]["publish/live/feed1"]
        publisher["pktRcvLoss"] += 3
        self.server.set("/stats", json.dumps(self.sls))

    def _run(self) -> None:
        while not self.stop.is_set():
            self._tick()
            self.stop.wait(0.2)

    @contextmanager
    def running(self) -> Iterator[None]:
        self._tick()
        self.thread.start()
        try:
            yield
        finally:
            self.stop.set()
            self.thread.join(timeout=5)


def host_tree(tmp: Path) -> Path:
    root = tmp / "host"
    shutil.copytree(HOST_CASE / "before", root, symlinks=True)
    return root


def advance_host_tree(root: Path) -> None:
    """Rewrite changed files in place (the agent keeps them open and re-reads them)."""
    after = HOST_CASE / "after"
    for path in after.rglob("*"):
        if path.is_file() and not path.is_symlink():
            target = root / path.relative_to(after)
            if not target.exists() or target.read_bytes() != path.read_bytes():
                target.write_bytes(path.read_bytes())


def stored_names(db: Path) -> set[str]:
    if not db.exists():
        return set()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {row[0] for row in conn.execute("SELECT DISTINCT name FROM series")}
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


def test_every_emitted_metric_is_in_docs_metrics_md(tmp_path: Path) -> None:
    receiver_port, health = free_port(), free_port()
    receiver = subprocess.Popen([*cli("metrics-receiver"), "--listen", f"127.0.0.1:{receiver_port}",
                                 "--db", str(tmp_path / "receiver.db")], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent: subprocess.Popen[bytes] | None = None
    log = tmp_path / "agent.log"
    secret(tmp_path / "belaui-password", PASSWORD)
    host = host_tree(tmp_path)
    try:
        wait_for_port("127.0.0.1", receiver_port, proc=receiver)
        with http_server() as server, belaui_server() as (belaui, _thread):
            feeder = Feeder(tmp_path, server)
            http = f"http://127.0.0.1:{server.port}"
            sources = [
                {"type": "srt-live-transmit", "stats_file": str(tmp_path / "slt-send.json"), "stream": "send"},
                {"type": "srt-live-transmit", "stats_file": str(tmp_path / "slt-recv.json"), "stream": "recv"},
                {"type": "sls", "url": f"{http}/stats", "stream": "feed1"},
                {"type": "openirl", "url": f"{http}/stats/play_abc", "stream": "live"},
                {"type": "mediamtx", "url": http, "path": "live"},
                {"type": "srtla-prom", "url": f"{http}/metrics"},
                source(belaui.port, tmp_path),
            ]
            db = tmp_path / "agent.db"
            config = {
                "device": {"id": "docs-box"},
                "storage": {"path": str(db)},
                "remote": {"url": f"http://127.0.0.1:{receiver_port}/api/metrics", "format": "json",
                           "interval": "500ms", "timeout": "5s"},
                "health": {"listen": f"127.0.0.1:{health}"},
                "host": {"proc_root": str(host / "proc"), "sys_root": str(host / "sys")},
                "monitoring": {"self_metrics_interval": "1s", "hold_untrusted_clock": False,
                               "clock_skew_url": f"http://127.0.0.1:{receiver_port}/health",
                               "clock_skew_check_interval": "1s"},
                "metrics": [
                    {"name": "cpu", "interval": "500ms"}, {"name": "memory", "interval": "500ms"},
                    {"name": "disk", "interval": "500ms"}, {"name": "network", "interval": "500ms"},
                    {"name": "thermal", "interval": "500ms", "trip_points": True},
                    {"name": "system", "interval": "500ms"}, {"name": "cpu.temperature", "interval": "500ms"},
                    {"name": "srt", "interval": "500ms", "sources": sources},
                    {"name": "srt.packet_loss", "interval": "500ms", "sources": sources[1:2]},
                ],
            }
            cfg = tmp_path / "config.yaml"
            cfg.write_text(json.dumps(config))  # JSON is YAML
            with feeder.running(), log.open("wb") as out:
                agent = subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(cfg)], env=ENV,
                                         stdout=out, stderr=subprocess.STDOUT)
                wait_for_port("127.0.0.1", health, timeout=60, proc=agent)
                deadline = time.monotonic() + 90
                while "cpu.frequency_hertz" not in stored_names(db) and time.monotonic() < deadline:
                    time.sleep(0.1)
                advance_host_tree(host)
                while not stored_names(db) >= AWAITED and time.monotonic() < deadline:
                    assert agent.poll() is None, log.read_text()
                    time.sleep(0.3)
                assert stored_names(db) >= AWAITED, f"never stored: {AWAITED - stored_names(db)}"
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=10) as answer:
                    exposition = answer.read().decode()
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=60)
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(timeout=30)

    names, histograms = documented()
    stored = stored_names(db)
    allowed_stored = names | {h + part for h in histograms for part in HISTOGRAM_PARTS}
    unlisted = sorted(stored - allowed_stored)
    assert not unlisted, f"stored but not in docs/metrics.md: {unlisted}"
    shown = {line.split("{")[0].split()[0] for line in exposition.splitlines() if line and line[0] != "#"}
    allowed_shown = set().union(*(exposed(n, histograms) for n in names))
    unlisted = sorted(shown - allowed_shown)
    assert not unlisted, f"exposed on /metrics but not in docs/metrics.md: {unlisted}"
    # The parse itself found the catalogue (a regex that finds nothing would allow nothing,
    # but one that finds too much would allow anything).
    assert {"cpu.usage_percent", "srt.rtt_seconds", "agent.health_status", "srtla.conn_rtt_seconds"} <= names
    assert "uploader.upload_duration_seconds" in histograms and "cpu.usage_percent" not in histograms
    assert len(stored) > 80 and "uploader_upload_duration_seconds_bucket" in shown and len(shown) > 30
