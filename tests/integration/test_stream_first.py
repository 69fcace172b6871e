"""Stream first: while real SRT is live the agent drains its backlog under the live budget,
and faster once the stream stops (issue 10). Priorities: the SRT series (P0) stay current
while the P2 backlog drains behind them, the P3 backlog (counters, held back by
``while_live: [P0, P1, P2]``) waits until the stream stops, and every series arrives in time order.

    UDP generator --> srt-live-transmit sender --srt--> srt-live-transmit receiver --> sink
                              | -statsout (JSON)
                              v
    agent (srt collector) --vm-jsonl+gzip--> counting proxy --> VictoriaMetrics

The counting proxy is the loopback path whose throughput is measured: it records, per
request, the arrival time and the compressed body bytes (what the token bucket counts),
and forwards the request to a real VictoriaMetrics.

Tolerances: the token bucket lets at most ``capacity + rate * W`` bytes go in any window of
W seconds (the live capacity is min(burst, 2 s of the live rate) = 8 KiB here), so the live
phase may exceed the live rate by one bucket over the window: 4 KiB/s * 8 s + 8 KiB, i.e.
5 KiB/s averaged. When the stream stops the rate must rise to at least 3x the live budget
(the idle budget is 12x) and stay within the idle budget plus one bucket.

The live state ends ``stale_after + live_hold`` after the last stats record: until its stats
file is stale, the srt-live-transmit source repeats the last record's send rate. The test
sets stale_after to 2 s so that shows within seconds (the default is 10 s).

Values are compared with VM at its precision (12 significant digits): the SRT collector's
``rtt_ms / 1000`` carries float noise (3.5999999999999994e-05) that VM stores as 3.6e-05.
"""

from __future__ import annotations

import gzip
import http.client
import json
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from belabox_metrics.model import Sample
from belabox_metrics.store.queue import SampleQueue
from tests.helpers import cli, free_port, require_tool, wait_for_port
from tests.integration.test_srt_real import PACKET, udp_port
from tests.integration.test_vm_delivery import DEVICE, ENV, backlog, stored_keys
from tests.vm import VictoriaMetrics

BACKLOG = 120_000
P3_BACKLOG = 2_000
LIVE_RATE = 4 * 1024
IDLE_RATE = 48 * 1024
BURST = 8 * 1024
LIVE_HOLD = 2.0
STALE_AFTER = 2.0  # the srt source stops repeating the last rate this long after the last record
FEED_RATE = 200  # datagrams per second (~2.1 Mbit/s of payload)
LIVE_WINDOW = 8.0
IDLE_WINDOW = 4.0
PEAK_WINDOW = 2.0
TEST_BUDGET = 60.0


@dataclass
class Arrival:
    at: float  # monotonic seconds
    wall_ms: int
    body_bytes: int
    header_bytes: int
    body: bytes


@dataclass
class CountingProxy:
    """HTTP/1.1 proxy on 127.0.0.1 that records every request and forwards it to VM."""

    target_port: int
    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                # Request line + header block as sent (CRLF line ends), for the per-sample figure.
                header_bytes = len(self.requestline) + 2 + len(str(self.headers).replace("\n", "\r\n"))
                with proxy.lock:
                    proxy.arrivals.append(Arrival(time.monotonic(), int(time.time() * 1000), len(body),
                                                  header_bytes, body))
                forward = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=10)
                try:
                    upstream.request("POST", self.path, body, forward)
                    answer = upstream.getresponse()
                    data = answer.read()
                    status = answer.status
                finally:
                    upstream.close()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass  # no access log on stderr: 100+ requests per run

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/import"

    def bytes_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(a.body_bytes for a in self.arrivals if start <= a.at < end)

    def peak(self, start: float, end: float, window: float) -> int:
        """Most bytes that arrived in any ``window`` seconds starting within [start, end - window]."""
        with self.lock:
            inside = [a for a in self.arrivals if start <= a.at < end]
        return max((sum(b.body_bytes for b in inside if a.at <= b.at < a.at + window)
                    for a in inside if a.at <= end - window), default=0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def lines_in(body: bytes) -> list[tuple[str, str, list[int]]]:
    """(metric name, series, timestamps) of each line of one gzip'd VM JSON-lines body."""
    out = []
    for line in gzip.decompress(body).decode().splitlines():
        if line.strip():
            parsed = json.loads(line)
            out.append((parsed["metric"]["__name__"], json.dumps(parsed["metric"], sort_keys=True),
                        parsed["timestamps"]))
    return out


def p3_backlog(db: Path, count: int) -> None:
    """Cumulative counters over the last hour: class P3 by the default `*_total` pattern."""
    queue = SampleQueue.open(str(db))
    now_ms = int(time.time() * 1000)
    queue.append([Sample("bench.bytes_total", float(i * 1000), now_ms - 3_600_000 + i * 1000, ())
                  for i in range(count)])
    queue.close()


def samples_in(body: bytes) -> int:
    """Samples in one gzip'd VM JSON-lines request body."""
    lines = gzip.decompress(body).decode().splitlines()
    return sum(len(json.loads(line)["values"]) for line in lines if line.strip())


def generate(port: int, stop: threading.Event, limit_s: float) -> int:
    """FEED_RATE datagrams of PACKET bytes per second until ``stop`` (at most ``limit_s``)."""
    payload = random.Random(10).randbytes(PACKET)
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        for i in range(int(FEED_RATE * limit_s)):
            if stop.is_set():
                break
            delay = start + i / FEED_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sock.sendto(payload, ("127.0.0.1", port))
            sent += 1
    return sent


def write_config(tmp: Path, url: str, stats: Path, health_port: int, *, burst: int = BURST, batch_size: int = 1000,
                 while_live: str = "{while_live: [P0, P1, P2]}   # counters (P3) wait while the stream is live"
                 ) -> Path:
    config = tmp / "config.yaml"
    config.write_text(f"""
device: {{id: {DEVICE}}}
storage: {{path: {tmp / 'agent.db'}}}
remote:
  url: {url}
  format: vm-jsonl
  interval: 1s
  timeout: 5s
  batch_size: {batch_size}
  shutdown_grace: 5s
  retry: {{max_attempts: 2, backoff_base: 100ms, backoff_max: 500ms}}
  bandwidth:
    max_bytes_per_second: {IDLE_RATE}
    live_bytes_per_second: {LIVE_RATE}
    burst_bytes: {burst}
    live_hold: {LIVE_HOLD:g}s
  priority: {while_live}
health: {{listen: "127.0.0.1:{health_port}"}}
logging: {{level: info, format: json}}
metrics:
  - name: srt
    interval: 1s
    sources:
      - {{type: srt-live-transmit, stats_file: {stats}, stream: sender, stale_after: {STALE_AFTER:g}s}}
""")
    return config


def bandwidth_health(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
        document = json.loads(answer.read())
    state = document["bandwidth"]
    assert isinstance(state, dict)
    return state


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.2) -> float:
    """Poll ``check()`` until true; the monotonic time it became true (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(step)
    raise TimeoutError(f"condition not met within {timeout}s")


def pending(db: Path, url: str) -> int:
    queue = SampleQueue.open(str(db))
    try:
        return queue.pending_count(url)
    finally:
        queue.close()


def vm_precision(value: float) -> float:
    """What VictoriaMetrics gives back for ``value``: it keeps 12 significant decimal digits
    (measured: 3.5999999999999994e-05 -> 3.6e-05, 1/3 -> 0.333333333333)."""
    return float(f"{value:.12g}")


def assert_each_stored_sample_in_vm_once(vm: VictoriaMetrics, db: Path) -> None:
    """test_vm_delivery's exactly-once check, with values compared at VM's precision: the
    SRT collector's float noise (rtt_ms / 1000) has 17 significant digits."""
    local = {(name, labels, ts, vm_precision(value)) for name, labels, ts, value in stored_keys(db)}
    deadline = time.monotonic() + 15  # VM shows the newest rows with a delay even after a flush
    while True:
        in_vm = vm.samples(f'{{device_id="{DEVICE}"}}')
        if local <= set(in_vm) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    stamps = Counter((name, labels, ts) for name, labels, ts, _ in in_vm)
    assert max(stamps.values()) == 1, "a sample is stored twice"
    missing = local - set(in_vm)
    assert not missing, f"{len(missing)} of {len(local)} stored samples not in VM, e.g. {sorted(missing)[:3]}"
    assert set(in_vm) == local


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)


def test_upload_stays_under_live_budget_while_streaming_and_rises_after(
        victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    tool = require_tool("srt-live-transmit", "srt-tools")
    started = time.monotonic()
    db = tmp_path / "agent.db"
    backlog(db, BACKLOG)
    p3_backlog(db, P3_BACKLOG)
    proxy = CountingProxy(victoria_metrics.port)
    health_port = free_port()
    stats = tmp_path / "send.json"
    config = write_config(tmp_path, proxy.url, stats, health_port)
    srt_port, input_port, sink_port = udp_port(), udp_port(), udp_port()
    stop_feed = threading.Event()
    fed: list[int] = []
    feeder = threading.Thread(target=lambda: fed.append(generate(input_port, stop_feed, 40.0)), daemon=True)
    receiver = sender = agent = None
    log = tmp_path / "agent.log"
    try:
        receiver = subprocess.Popen(
            [tool, "-pf:json", f"srt://127.0.0.1:{srt_port}?mode=listener&latency=200",
             f"udp://127.0.0.1:{sink_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        # -s:100 at 200 datagrams/s: a stats record every half second.
        sender = subprocess.Popen(
            [tool, "-s:100", "-pf:json", f"-statsout:{stats}", f"udp://127.0.0.1:{input_port}",
             f"srt://127.0.0.1:{srt_port}?latency=200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        feeder.start()
        wait_until(lambda: stats.exists() and stats.stat().st_size > 0, 10)

        with log.open("ab") as out:
            agent = subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)], env=ENV,
                                     stdout=out, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", health_port, timeout=15, proc=agent)
        live_at = wait_until(lambda: bandwidth_health(health_port)["stream_live"] is True, 10)
        assert bandwidth_health(health_port)["limit_bytes_per_second"] == LIVE_RATE

        # Phase 1: live. Warm up 2 s (the bucket shrinks to the live capacity), then measure.
        live_start = live_at + 2.0
        live_end = live_start + LIVE_WINDOW
        live_states = []
        while time.monotonic() < live_end:
            live_states.append(bandwidth_health(health_port)["stream_live"])
            time.sleep(0.5)
        live_rate = proxy.bytes_between(live_start, live_end) / LIVE_WINDOW
        live_peak = proxy.peak(live_start, live_end, PEAK_WINDOW)
        assert all(live_states), f"stream_live dropped during the live window: {live_states}"
        assert pending(db, proxy.url) > 0, "the backlog drained already: the budget did not limit"

        # Phase 2: the stream stops (feeder and sender gone); live ends after stale + hold.
        stop_feed.set()
        stopped_at = time.monotonic()
        stop_process(sender)
        idle_at = wait_until(lambda: bandwidth_health(health_port)["stream_live"] is False, 15)
        idle_state = bandwidth_health(health_port)
        idle_start = idle_at + 1.0  # one full refill of the bigger bucket, and the uploader waking
        idle_end = idle_start + IDLE_WINDOW
        time.sleep(max(0.0, idle_end - time.monotonic()))
        idle_rate = proxy.bytes_between(idle_start, idle_end) / IDLE_WINDOW
        assert pending(db, proxy.url) > 0, "the backlog drained within the idle window: rate not measurable"

        # Drain the rest, then stop the agent cleanly (its final upload sends the last samples).
        wait_until(lambda: pending(db, proxy.url) == 0, max(1.0, started + TEST_BUDGET - 8 - time.monotonic()),
                   step=0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=2) as answer:
            exposition = answer.read().decode()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=15) == 0, log.read_text()[-3000:]
    finally:
        stop_feed.set()
        for proc in (agent, sender, receiver):
            if proc is not None:
                stop_process(proc)
        feeder.join(timeout=2)
        proxy.close()

    delivered = len(stored_keys(db))
    total_body = sum(a.body_bytes for a in proxy.arrivals)
    total_headers = sum(a.header_bytes for a in proxy.arrivals)
    sent_samples = sum(samples_in(a.body) for a in proxy.arrivals)
    elapsed = time.monotonic() - started
    print(f"\nlive window: {live_rate / 1024:.2f} KiB/s (budget {LIVE_RATE / 1024:g} KiB/s), "
          f"peak {live_peak} B in {PEAK_WINDOW:g} s (bucket allows {BURST + LIVE_RATE * PEAK_WINDOW:.0f}); "
          f"live ended {idle_at - stopped_at:.1f} s after the stream stopped "
          f"(stale_after {STALE_AFTER:g} s + live_hold {LIVE_HOLD:g} s + collector interval); "
          f"idle window: {idle_rate / 1024:.2f} KiB/s (budget {IDLE_RATE / 1024:g} KiB/s)")
    print(f"requests {len(proxy.arrivals)}, samples sent {sent_samples} (delivered {delivered}, backlog {BACKLOG}), "
          f"body {total_body} B = {total_body / sent_samples:.2f} B/sample, with HTTP headers "
          f"{(total_body + total_headers) / sent_samples:.2f} B/sample; fed {fed[0] if fed else 0} datagrams; "
          f"{elapsed:.1f} s")

    assert_each_stored_sample_in_vm_once(victoria_metrics, db)
    # Priorities. While live: SRT (P0) current, P3 not at all; every series in time order.
    live_lines = [(a.wall_ms, line) for a in proxy.arrivals if live_start <= a.at < live_end
                  for line in lines_in(a.body)]
    srt_lags = [wall_ms - max(stamps) for wall_ms, (name, _, stamps) in live_lines if name.startswith("srt_")]
    assert srt_lags, "no SRT sample went out while live"
    assert max(srt_lags) <= 5_000, f"SRT samples {max(srt_lags)} ms old when sent while live: P0 fell behind"
    assert not [name for _, (name, _, _) in live_lines if name == "bench_bytes_total"], "P3 went out while live"
    last_stamp: dict[str, int] = {}
    for arrival in proxy.arrivals:
        for _, series, stamps in lines_in(arrival.body):
            assert stamps == sorted(stamps) and stamps[0] > last_stamp.get(series, -1), f"{series} out of order"
            last_stamp[series] = stamps[-1]
    print(f"SRT (P0) samples {max(srt_lags) / 1000:.1f} s old at most when sent while live "
          f"({len(srt_lags)} lines); P3 backlog of {P3_BACKLOG} sent after the stream stopped")
    assert live_rate <= LIVE_RATE + BURST / LIVE_WINDOW, f"{live_rate:.0f} B/s while live"
    # Arrival times at the proxy jitter against the agent's charge times: half a bucket of slack.
    assert live_peak <= BURST + LIVE_RATE * PEAK_WINDOW + BURST / 2, f"{live_peak} B in {PEAK_WINDOW:g} s while live"
    assert fed and fed[0] >= FEED_RATE * (LIVE_WINDOW + 2), "the stream did not run through the live window"
    assert live_rate >= LIVE_RATE * 0.5, f"{live_rate:.0f} B/s while live: the backlog hardly moved"
    assert idle_state["stream_live"] is False and idle_state["limit_bytes_per_second"] == IDLE_RATE
    assert idle_rate >= 3 * LIVE_RATE, f"{idle_rate:.0f} B/s after the stream stopped"
    assert idle_rate <= IDLE_RATE + BURST / IDLE_WINDOW
    assert idle_at - stopped_at <= STALE_AFTER + LIVE_HOLD + 3.0
    assert "uploader_stream_live 0" in exposition
    assert f"uploader_bandwidth_limit_bytes_per_second {IDLE_RATE}" in exposition
    assert "uploader_bandwidth_wait_seconds_total" in exposition
    assert sent_samples >= delivered >= BACKLOG
    assert elapsed <= TEST_BUDGET


def start_stream(tool: str, tmp: Path, stop_feed: threading.Event, fed: list[int]
                 ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], threading.Thread, Path]:
    """srt-live-transmit receiver and sender with a UDP feed: a stream that is live."""
    stats = tmp / "send.json"
    srt_port, input_port, sink_port = udp_port(), udp_port(), udp_port()
    receiver = subprocess.Popen(
        [tool, "-pf:json", f"srt://127.0.0.1:{srt_port}?mode=listener&latency=200",
         f"udp://127.0.0.1:{sink_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sender = subprocess.Popen(
        [tool, "-s:100", "-pf:json", f"-statsout:{stats}", f"udp://127.0.0.1:{input_port}",
         f"srt://127.0.0.1:{srt_port}?latency=200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    feeder = threading.Thread(target=lambda: fed.append(generate(input_port, stop_feed, 60.0)), daemon=True)
    feeder.start()
    return receiver, sender, feeder, stats


def test_restart_mid_stream_keeps_to_the_live_budget_from_the_first_byte(
        victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    """Issue 23: an agent that starts while a stream is already live, with a backlog and the
    shipped idle burst (256 KiB), keeps every 1 s window from its first byte within the live
    budget plus the live bucket, and its SRT (P0) series reach VictoriaMetrics within 15 s."""
    tool = require_tool("srt-live-transmit", "srt-tools")
    db = tmp_path / "agent.db"
    backlog(db, BACKLOG)
    proxy = CountingProxy(victoria_metrics.port)
    health_port = free_port()
    stop_feed = threading.Event()
    fed: list[int] = []
    receiver = sender = agent = None
    feeder: threading.Thread | None = None
    log = tmp_path / "agent.log"
    measure = 10.0
    shipped_burst = 256 * 1024
    live_capacity = min(shipped_burst, 2 * LIVE_RATE)
    try:
        receiver, sender, feeder, stats = start_stream(tool, tmp_path, stop_feed, fed)
        # The stream is up before the agent starts: stats records are arriving.
        wait_until(lambda: stats.exists() and stats.stat().st_size > 2000, 20)
        config = write_config(tmp_path, proxy.url, stats, health_port, burst=shipped_burst, batch_size=10_000,
                              while_live="{}  # the shipped default: every class, in order")
        with log.open("ab") as out:
            agent = subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)], env=ENV,
                                     stdout=out, stderr=subprocess.STDOUT)
        agent_started = time.monotonic()
        first_byte = wait_until(lambda: bool(proxy.arrivals), 20)
        first_byte = proxy.arrivals[0].at
        # P0 (the SRT series) in VictoriaMetrics within 15 s of the start.
        def srt_in_vm() -> bool:
            victoria_metrics.flush()
            return bool(victoria_metrics.samples(f'{{__name__=~"srt_.*", device_id="{DEVICE}"}}'))
        p0_at = wait_until(srt_in_vm, 25, step=0.5)
        time.sleep(max(0.0, first_byte + measure - time.monotonic()))
        health = bandwidth_health(health_port)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=20) == 0, log.read_text()[-3000:]
    finally:
        stop_feed.set()
        for proc in (agent, sender, receiver):
            if proc is not None:
                stop_process(proc)
        if feeder is not None:
            feeder.join(timeout=2)
        proxy.close()

    # Every 1 s window from the first byte, up to the measured end (the shutdown flush after
    # SIGTERM is a stop, not part of the stream: it is cut off by the end of the window).
    with proxy.lock:
        arrivals = [a for a in proxy.arrivals if a.at < first_byte + measure]
    allowance = LIVE_RATE * 1.0 + live_capacity
    windows = [sum(b.body_bytes for b in arrivals if a.at <= b.at < a.at + 1.0) for a in arrivals]
    print(f"\nrestart mid-stream: first byte {first_byte - agent_started:.2f} s after start, "
          f"{len(arrivals)} requests in {measure:g} s, largest request {max(a.body_bytes for a in arrivals)} B, "
          f"busiest 1 s window {max(windows)} B (allowance {allowance:.0f} B: live rate + live bucket), "
          f"SRT in VM {p0_at - agent_started:.1f} s after start")
    assert max(windows) <= allowance * 1.1, f"{max(windows)} B in one second while the stream was live"
    assert p0_at - agent_started <= 15.0
    assert health["stream_live"] is True and health["stream"] == "live"
    assert health["limit_bytes_per_second"] == LIVE_RATE
    assert fed and fed[0] > 0
