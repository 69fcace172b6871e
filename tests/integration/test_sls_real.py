"""OpenIRL srt-live-server (../shared/realsrc/sls, built from source) with srt-live-transmit
publishing through a lossy relay, read by the real agent into a real VictoriaMetrics:

    null-TS feeder --udp--> srt-live-transmit --srt--> relay (drops 4 % of data packets) --srt--> sls
    sls /stats/play_1 (openirl) and /stats/play_1?legacy=1 (sls) --> metrics-collector --> VictoriaMetrics

Checked in VictoriaMetrics: the stream is connected under both sources; the packets SLS
counted lost are the original packets the relay really dropped (retransmissions it dropped
are no new loss), as a rate within 1 point of the relay's; the publisher reconnects once
(srt-live-transmit restarted) and that is one reconnect, with the counters going on from
where they were (never counted twice).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, free_port, require_tool, wait_for_port
from tests.integration.test_srt_real import LossyRelay, udp_port
from tests.realsrc.harness import Feeder, Sls, sls_binary
from tests.vm import VictoriaMetrics

DEVICE = "sls-box-5"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
pytestmark = pytest.mark.timeout(240)


def latest(vm: VictoriaMetrics, promql: str) -> list[tuple[dict[str, str], float]]:
    result = vm.query(promql)["data"]["result"]  # type: ignore[index]
    return [(r["metric"], float(r["value"][1])) for r in result]  # type: ignore[index]


def wait_until(what: str, check: Callable[[], Any], timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g}s; agent log: {log.read_text()[-2000:]}")


def publisher(slt: str, input_port: int, relay_port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([slt, f"udp://127.0.0.1:{input_port}",
                                 f"srt://127.0.0.1:{relay_port}?streamid=studio_1&latency=500"],
                                stdout=out, stderr=subprocess.STDOUT)


def test_openirl_sls_through_a_lossy_relay_into_victoria_metrics(
        tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    vm = victoria_metrics
    slt = require_tool("srt-live-transmit", "srt-tools")
    server = Sls(sls_binary(), tmp_path / "sls", free_port(), udp_port(), udp_port())
    relay = LossyRelay(server.publisher_port, drop_share=0.04, seed=11)
    relay.thread.start()
    input_port = udp_port()
    feeder = Feeder(input_port)
    agent: subprocess.Popen[bytes] | None = None
    sender: subprocess.Popen[bytes] | None = None
    log = tmp_path / "agent.log"
    try:
        server.start()
        server.map_stream("studio_1", "play_1")
        health_port = free_port()
        config = tmp_path / "config.yaml"
        config.write_text(f"""
device: {{id: {DEVICE}}}
storage: {{path: {tmp_path / 'agent.db'}}}
remote: {{url: {vm.import_url}, format: vm-jsonl, interval: 1s, timeout: 5s, shutdown_grace: 5s}}
health: {{listen: "127.0.0.1:{health_port}"}}
logging: {{level: info, format: json}}
metrics:
  - name: srt
    interval: 1s
    sources:
      - {{type: openirl, url: "{server.url}/stats/play_1", stream: live}}
      - {{type: sls, url: "{server.url}/stats/play_1?legacy=1", stream: live}}
""")
        with log.open("wb") as out:
            agent = subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)],
                                     env=ENV, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", health_port, timeout=60, proc=agent)
        sel = f'device_id="{DEVICE}",stream="live"'
        # nobody publishes yet: both sources say so (a 0, not an error)
        wait_until("stream_connected 0 from both sources", lambda: len(latest(
            vm, f"srt_stream_connected{{{sel}}} == 0")) == 2, 60, log)

        sender = publisher(slt, input_port, relay.port, tmp_path / "slt.log")
        wait_until("stream_connected 1 from both sources", lambda: len(latest(
            vm, f"srt_stream_connected{{{sel}}} == 1")) == 2, 60, log)
        wait_until("8 s of publishing", lambda: relay.originals_seen > 8 * 250, 60, log)

        # the encoder's SRT connection restarts: one reconnect
        sender.terminate()
        sender.wait(timeout=10)
        sender = publisher(slt, input_port, relay.port, tmp_path / "slt.log")
        restarted = relay.originals_seen
        wait_until("6 s on the new connection", lambda: relay.originals_seen > restarted + 6 * 250, 60, log)
        feeder.close()
        stopped = time.time()
        # a poll taken 2 s after the encoder stopped (the last retransmissions landed within
        # the 0.5 s SRT latency) is in VictoriaMetrics
        wait_until("the agent's last counters in VictoriaMetrics", lambda: any(
            ts > stopped + 2 for _, ts in latest(vm, f'timestamp(srt_packets_lost_total{{{sel},source="sls"}})')),
            30, log)
        [(_, lost)] = latest(vm, f'srt_packets_lost_total{{{sel},source="sls"}}')
        agent_rate = 100.0 * lost / relay.originals_seen
        print(f"relay: {relay.originals_dropped}/{relay.originals_seen} originals dropped "
              f"({relay.original_drop_percent:.2f} %), {relay.data_dropped - relay.originals_dropped} "
              f"retransmissions dropped; sls counted {lost:.0f} lost = {agent_rate:.2f} %")
        assert relay.originals_dropped >= 40
        assert abs(agent_rate - relay.original_drop_percent) <= 1.0
        assert lost <= relay.originals_dropped  # nothing counted twice across the reconnect
        for source in ("sls", "openirl"):
            [(_, reconnects)] = latest(vm, f'srt_reconnects_total{{{sel},source="{source}"}}')
            assert reconnects == 1, source
        [(_, rtt)] = latest(vm, f'srt_rtt_seconds{{{sel},source="sls"}}')
        assert 0 < rtt < 0.1
        [(_, bitrate)] = latest(vm, f'max_over_time(srt_stream_bitrate_bits_per_second{{{sel},source="openirl"}}[30s])')
        assert bitrate == pytest.approx(250 * 1316 * 8, rel=0.25)
        [(_, latency)] = latest(vm, f'srt_latency_seconds{{{sel},source="openirl"}}')
        assert latency == pytest.approx(0.5, abs=0.05)
    finally:
        feeder.close()
        if sender is not None:
            sender.terminate()
            sender.wait(timeout=10)
        if agent is not None:
            agent.terminate()
            assert agent.wait(timeout=30) == 0
        server.stop()
        relay.close()
