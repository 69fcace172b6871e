"""`sls` and `openirl` sources over what the real OpenIRL srt-live-server answered
(tests/fixtures/srt/openirl-real, see its PROVENANCE). irl-srt-server's answers are replayed
from its own captures in test_irl_srt_server_replay.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from belabox_metrics.collectors.base import CollectorError
from belabox_metrics.validation import ConfigError
from tests.unit.test_srt_support import FIXTURES, http_server, make_collector, now_ms, one, pick

REAL = FIXTURES / "openirl-real"


def real(name: str) -> dict[str, Any]:
    return json.loads((REAL / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_openirl_modern_as_the_real_server_answers() -> None:
    with http_server() as server:
        server.set("/stats/play_1", json.dumps(real("stats_modern_live_1.json")))
        collector = make_collector([{"type": "openirl", "url": f"http://127.0.0.1:{server.port}/stats/play_1",
                                     "stream": "live"}])
        got = collector.collect(now_ms())
        labels = {"source": "openirl", "stream": "live"}
        assert one(got, "srt.stream_connected", **labels) == 1
        assert one(got, "srt.stream_bitrate_bits_per_second", **labels) == 2_629_000
        assert one(got, "srt.buffer_seconds", **labels) == pytest.approx(0.488)
        assert one(got, "srt.rtt_seconds", **labels) == pytest.approx(0.000805)
        assert one(got, "srt.latency_seconds", **labels) == pytest.approx(0.5)
        assert one(got, "srt.uptime_seconds", **labels) == 2
        # nobody publishing: the real answer has no `publisher` key at all, and a message
        server.set("/stats/play_1", json.dumps(real("stats_modern_idle.json")))
        assert [(s.name, s.value) for s in collector.collect(now_ms())] == [("srt.stream_connected", 0.0)]
        # an unmapped player id is an error that says what to check, not an offline stream
        server.set("/stats/play_1", json.dumps(real("stats_unknown_player.json")))
        with pytest.raises(CollectorError, match=r"'Invalid player key'\): check the player id"):
            collector.collect(now_ms())


def test_legacy_counters_across_a_reconnect_told_by_uptime() -> None:
    with http_server() as server:
        url = f"http://127.0.0.1:{server.port}/stats/play_1"
        collector = make_collector([{"type": "sls", "url": url + "?legacy=1", "stream": "live"}])
        labels = {"source": "sls", "stream": "live"}
        recv = {**labels, "direction": "receive"}
        server.set("/stats/play_1", json.dumps(real("stats_legacy_idle.json")))
        assert one(collector.collect(now_ms()), "srt.stream_connected", **labels) == 0
        server.set("/stats/play_1", json.dumps(real("stats_legacy_live_1.json")))
        got = collector.collect(now_ms())  # a connection that appeared while watched: from zero
        assert one(got, "srt.packets_lost_total", **recv) == 28
        assert one(got, "srt.reconnects_total", **labels) == 0  # the first connection
        assert one(got, "srt.stream_connected", **labels) == 1
        assert one(got, "srt.receive_rate_bits_per_second", **labels) == pytest.approx(2.7174014e6)
        assert pick(got, "srt.packet_loss") == []  # no received-packet count: no made-up loss %
        server.set("/stats/play_1", json.dumps(real("stats_legacy_live_2.json")))
        assert one(collector.collect(now_ms()), "srt.packets_lost_total", **recv) == 54
        # the encoder reconnected between two polls and already lost more than before
        # (its counter did not go down): only the server's uptime (6 s -> 1 s) tells
        again = real("stats_legacy_reconnected.json")
        again["publishers"]["live"]["pktRcvLoss"] = 60
        server.set("/stats/play_1", json.dumps(again))
        got = collector.collect(now_ms())
        assert one(got, "srt.packets_lost_total", **recv) == 54 + 60
        assert one(got, "srt.reconnects_total", **labels) == 1
        assert one(collector.collect(now_ms()), "srt.reconnects_total", **labels) == 1  # once
        # gone for a poll, then back: one more reconnect
        server.set("/stats/play_1", json.dumps(real("stats_legacy_idle.json")))
        collector.collect(now_ms())
        server.set("/stats/play_1", json.dumps(real("stats_legacy_live_1.json")))
        got = collector.collect(now_ms())
        assert one(got, "srt.reconnects_total", **labels) == 2
        assert one(got, "srt.packets_lost_total", **recv) == 54 + 60 + 28


@pytest.mark.parametrize(("options", "words"), [
    ({"url": "http://h:8181/stats?publisher=a/b/c", "publisher": "a/b/c"}, r"sources\[0\]\.publisher: the URL has a \?publisher= query as well\. Fix: keep one"),
    ({"url": "http://h:8181/stats", "api_key_file": "/k", "credentials_file": "/c"}, r"sources\[0\]\.api_key_file: is set together with credentials_file\. Fix: SLS takes"),
])
def test_conflicting_options_name_the_key_and_the_fix(options: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        make_collector([{"type": "sls", **options}])
