"""Real SRT: Debian's srt-live-transmit as sender and receiver on 127.0.0.1, a lossy UDP
relay of our own between them, and the agent's `srt` collector reading both stats files.

    generator --udp--> sender slt --srt--> relay (drops data packets) --srt--> receiver slt --udp--> sink

The relay drops a known share of SRT *data* packets (deterministic RNG) and counts what it
really dropped; control packets (ACK, NAK, keepalive) always pass so the handshake and
retransmission requests work. The lossy and the clean run go in parallel to keep the file
well under 40 s.

Tolerance: the agent's overall loss (its own _total counters: lost / (received + lost),
the facts file's definition) must be within 1 percentage point of the relay's real drop
share (dropped / data datagrams offered). On loopback every dropped packet is retransmitted
once, so the two agree to within the packets after srt-live-transmit's last report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from belabox_metrics.clock import SystemClock
from belabox_metrics.collectors.base import CollectorContext, CollectorError, MetricSettings
from belabox_metrics.collectors.procfs import FsRoot
from belabox_metrics.collectors.srt import SrtCollector, SrtOptions, parse_options
from belabox_metrics.model import Sample
from belabox_metrics.validation import Reader
from tests.helpers import require_tool

PACKET = 1316  # 7 MPEG-TS packets, what encoders send
RATE = 250  # datagrams per second -> 2.632 Mbit/s of payload
SECONDS = 5.0
FED_BITS_PER_SECOND = RATE * PACKET * 8


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LossyRelay:
    """Forwards SRT between a caller and a listener, dropping a share of data packets."""

    target_port: int
    drop_share: float
    seed: int = 6
    data_seen: int = 0
    data_dropped: int = 0
    retransmits_seen: int = 0
    originals_seen: int = 0
    originals_dropped: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.rng = random.Random(self.seed)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        caller: tuple[str, int] | None = None
        target = ("127.0.0.1", self.target_port)
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr == target:
                if caller is not None:
                    self.sock.sendto(data, caller)
                continue
            caller = addr
            if data and not data[0] & 0x80:  # SRT data packet (control packets have F=1)
                self.data_seen += 1
                original = not (len(data) > 4 and data[4] & 0x04)  # R flag: a retransmission
                if original:
                    self.originals_seen += 1
                else:
                    self.retransmits_seen += 1
                if self.rng.random() < self.drop_share:
                    self.data_dropped += 1
                    self.originals_dropped += original
                    continue
            self.sock.sendto(data, target)

    @property
    def real_drop_percent(self) -> float:
        return 100.0 * self.data_dropped / self.data_seen

    @property
    def original_drop_percent(self) -> float:
        """The share of original packets (not retransmissions) dropped: SRT's loss."""
        return 100.0 * self.originals_dropped / self.originals_seen

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


def feed(port: int, stop: threading.Event) -> int:
    """RATE datagrams of PACKET bytes per second for SECONDS, paced on a schedule."""
    sent = 0
    rng = random.Random(1)
    payload = bytes(rng.getrandbits(8) for _ in range(PACKET))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        for i in range(int(RATE * SECONDS)):
            if stop.is_set():
                break
            delay = start + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sock.sendto(payload, ("127.0.0.1", port))
            sent += 1
    return sent


def collector_for(recv_stats: Path, send_stats: Path) -> SrtCollector:
    reader = Reader({"sources": [
        {"type": "srt-live-transmit", "stats_file": str(recv_stats), "stream": "receiver"},
        {"type": "srt-live-transmit", "stats_file": str(send_stats), "stream": "sender"},
    ]}, "metrics[0]")
    options: SrtOptions = parse_options(reader)
    ctx = CollectorContext(fs=FsRoot(), clock=SystemClock(), device_id="test",
                           log=logging.getLogger("test.srt"))
    return SrtCollector(MetricSettings(name="srt", interval=0.5, options=options), ctx)


@dataclass
class RunResult:
    relay_drop_percent: float
    data_seen: int
    dropped: int
    fed: int
    samples: list[Sample]


def run_link(tool: str, tmp: Path, drop_share: float) -> RunResult:
    listen_port, input_port, sink_port = udp_port(), udp_port(), udp_port()
    recv_stats, send_stats = tmp / "recv.json", tmp / "send.json"
    relay = LossyRelay(listen_port, drop_share)
    relay.thread.start()
    collector = collector_for(recv_stats, send_stats)
    procs: list[subprocess.Popen[bytes]] = []
    samples: list[Sample] = []
    stop = threading.Event()
    try:
        procs.append(subprocess.Popen(
            [tool, "-s:250", "-pf:json", f"-statsout:{recv_stats}",
             f"srt://127.0.0.1:{listen_port}?mode=listener&latency=200",
             f"udp://127.0.0.1:{sink_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.3)
        procs.append(subprocess.Popen(
            [tool, "-s:250", "-pf:json", f"-statsout:{send_stats}",
             f"udp://127.0.0.1:{input_port}", f"srt://127.0.0.1:{relay.port}?latency=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _poll(collector, samples)  # first poll: files may not exist yet (counted errors)
        time.sleep(0.5)
        fed_box: list[int] = []
        feeder = threading.Thread(target=lambda: fed_box.append(feed(input_port, stop)))
        feeder.start()
        deadline = time.monotonic() + SECONDS + 5
        while feeder.is_alive() and time.monotonic() < deadline:
            _poll(collector, samples)
            time.sleep(0.5)
        feeder.join(timeout=5)
        time.sleep(1.0)  # let the last retransmissions and reports land
        _poll(collector, samples)
        return RunResult(relay.original_drop_percent, relay.data_seen, relay.data_dropped,
                         fed_box[0] if fed_box else 0, samples)
    finally:
        stop.set()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        collector.close()
        relay.close()


def _poll(collector: SrtCollector, into: list[Sample]) -> None:
    # Before the stats files exist every source fails: counted, nothing to keep.
    with contextlib.suppress(CollectorError):
        into.extend(collector.collect(int(time.time() * 1000)))


def last(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s for s in samples
             if s.name == name and all(s.label(k) == v for k, v in labels.items())]
    assert found, f"no {name} {labels}"
    value = found[-1].value
    assert value is not None
    return value


def values(samples: list[Sample], name: str, **labels: str) -> list[float]:
    return [s.value for s in samples if s.name == name and s.value is not None
            and all(s.label(k) == v for k, v in labels.items())]


def test_loss_rtt_retransmits_and_rate_from_real_srt(tmp_path: Path) -> None:
    tool = require_tool("srt-live-transmit", "srt-tools")
    started = time.monotonic()
    results: dict[str, RunResult] = {}
    errors: list[BaseException] = []

    def scenario(name: str, share: float) -> None:
        try:
            directory = tmp_path / name
            directory.mkdir()
            results[name] = run_link(tool, directory, share)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=scenario, args=("lossy", 0.03)),
               threading.Thread(target=scenario, args=("clean", 0.0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=35)
    assert not errors, errors
    elapsed = time.monotonic() - started
    assert elapsed < 40

    lossy = results["lossy"]
    recv = {"stream": "receiver", "direction": "receive"}
    received = last(lossy.samples, "srt.packets_received_total", **recv)
    lost = last(lossy.samples, "srt.packets_lost_total", **recv)
    retransmitted = last(lossy.samples, "srt.packets_retransmitted_total", **recv)
    # SRT's definition: lost / originals (received counts the retransmissions that recovered them)
    agent_loss = 100.0 * lost / (received - retransmitted + lost)
    print(f"lossy: relay dropped {lossy.dropped}/{lossy.data_seen} data packets = "
          f"{lossy.relay_drop_percent:.2f} %; agent: lost {lost:.0f}, received {received:.0f} "
          f"= {agent_loss:.2f} %; fed {lossy.fed} datagrams in {elapsed:.1f} s")
    assert lossy.dropped >= 10
    assert abs(agent_loss - lossy.relay_drop_percent) <= 0.6
    interval_losses = values(lossy.samples, "srt.packet_loss", **recv)
    assert len(interval_losses) >= 3
    assert all(0.0 <= v <= 20.0 for v in interval_losses)
    assert max(interval_losses) > 0.0
    assert last(lossy.samples, "srt.packets_retransmitted_total", **recv) > 0
    assert last(lossy.samples, "srt.packets_retransmitted_total",
                stream="sender", direction="send") > 0
    assert last(lossy.samples, "srt.packets_lost_total", stream="sender", direction="send") > 0
    assert last(lossy.samples, "srt.rtt_seconds", stream="receiver") > 0
    # SRT's rate counts its 44 header bytes per 1316-byte payload (+3.3 %); pacing jitter
    # moves single reports, so compare the median of the receiver's reports.
    rates = sorted(values(lossy.samples, "srt.receive_rate_bits_per_second", stream="receiver"))
    median_rate = rates[len(rates) // 2]
    print(f"receive rate median {median_rate / 1e6:.3f} Mbit/s, fed "
          f"{FED_BITS_PER_SECOND / 1e6:.3f} Mbit/s payload")
    assert abs(median_rate - FED_BITS_PER_SECOND) / FED_BITS_PER_SECOND < 0.15
    # Counters the agent accumulates are monotonic.
    totals = values(lossy.samples, "srt.packets_received_total", **recv)
    assert totals == sorted(totals)

    clean = results["clean"]
    assert clean.dropped == 0
    clean_losses = values(clean.samples, "srt.packet_loss", **recv)
    assert len(clean_losses) >= 3
    assert set(clean_losses) == {0.0}
    assert last(clean.samples, "srt.packets_lost_total", **recv) == 0
    assert last(clean.samples, "srt.packets_received_total", **recv) > RATE * SECONDS * 0.8
    assert os.path.getsize(tmp_path / "clean" / "recv.json") > 0
