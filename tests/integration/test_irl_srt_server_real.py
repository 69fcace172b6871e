"""The `sls` source against the real irlserver/irl-srt-server (built from source by
tests/realsrc/build_irl_sls.sh), with `api_keys` configured, while srt-live-transmit
publishes `publish/live/feed1` through a relay that drops 4 % of the SRT data packets:

- `publisher: publish/live/feed1` reads the stream as live, and the packets the server
  counts lost are the originals the relay dropped;
- the raw API key from `api_key_file` lists every publisher;
- a wrong key gets the 401 hint naming `api_key_file`; no publisher query and no key get
  the clear error.

Skips with the reason outside CI when the server cannot be built; fails under CI=true."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from belabox_metrics.collectors.base import CollectorError
from tests.helpers import free_port, require_tool
from tests.integration.test_srt_real import LossyRelay, udp_port
from tests.realsrc.harness import Feeder, IrlSls, irl_sls_binary
from tests.unit.test_srt_support import make_collector, now_ms, one, pick

pytestmark = pytest.mark.timeout(300)
STREAM = "publish/live/feed1"
KEY = "it-api-key-1c9e"  # the test server's own throwaway key


def secret(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    os.chmod(path, 0o600)
    return str(path)


def test_sls_source_against_the_real_irl_srt_server(tmp_path: Path) -> None:
    slt = require_tool("srt-live-transmit", "srt-tools")
    binary = irl_sls_binary()
    server = IrlSls(binary, tmp_path / "sls", free_port(), udp_port(), udp_port(), api_key=KEY)
    relay = LossyRelay(server.publisher_port, drop_share=0.04, seed=11)
    relay.thread.start()
    feeder = Feeder(input_port := udp_port())
    sender: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        by_query = make_collector([{"type": "sls", "url": f"{server.url}/stats", "publisher": STREAM}])
        keyed = make_collector([{"type": "sls", "url": f"{server.url}/stats", "stream": STREAM,
                                 "api_key_file": secret(tmp_path, "key", KEY)}])
        labels = {"source": "sls", "stream": STREAM}
        recv = {**labels, "direction": "receive"}
        assert one(by_query.collect(now_ms()), "srt.stream_connected", **labels) == 0  # not yet
        sender = subprocess.Popen([slt, f"udp://127.0.0.1:{input_port}",
                                   f"srt://127.0.0.1:{relay.port}?streamid={STREAM}&latency=500"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lost = 0.0
        deadline = time.monotonic() + 90
        while True:  # until the relay dropped enough originals to compare
            got = by_query.collect(now_ms())
            if one(got, "srt.stream_connected", **labels) == 1:
                lost = one(got, "srt.packets_lost_total", **recv)
                if relay.originals_dropped >= 40 and lost >= 40:
                    break
            assert sender.poll() is None, "srt-live-transmit exited"
            assert time.monotonic() < deadline, f"no live stream with loss in 90 s: {server.log_tail()}"
            time.sleep(0.5)
        # connected after the first poll: every loss counted, none twice
        assert abs(lost - relay.originals_dropped) <= max(5, 0.15 * relay.originals_dropped), (
            lost, relay.originals_dropped)
        assert one(got, "srt.reconnects_total", **labels) == 0
        assert one(got, "srt.stream_bitrate_bits_per_second", **labels) > 1e6

        got = keyed.collect(now_ms())
        assert one(got, "srt.stream_connected", **labels) == 1
        assert pick(got, "srt.packets_retransmitted_total", **recv)

        wrong = make_collector([{"type": "sls", "url": f"{server.url}/stats",
                                 "api_key_file": secret(tmp_path, "wrong", "Bearer " + KEY)}])
        with pytest.raises(CollectorError, match=r"HTTP 401 .*api_key_file"):
            wrong.collect(now_ms())
        bare = make_collector([{"type": "sls", "url": f"{server.url}/stats", "stream": STREAM}])
        with pytest.raises(CollectorError, match=r"HTTP 401 .*`publisher: <full stream id>`"):
            bare.collect(now_ms())
    finally:
        feeder.close()
        if sender is not None:
            sender.terminate()
            sender.wait(timeout=10)
        server.stop()
        relay.close()
