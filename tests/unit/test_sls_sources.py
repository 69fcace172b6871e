"""`sls` and `openirl` sources over what the real OpenIRL srt-live-server answered
(tests/fixtures/srt/openirl-real, see its PROVENANCE), and over irlserver/irl-srt-server's
answer shapes.

irl-srt-server is not built here (its sources with submodules are 32 MB): its shapes are
taken from its /stats handler (irlserver/irl-srt-server 750ee17, src/srt-live-server.cpp and
src/core/SLSManager.cpp `create_json_stats_for_publisher`): publishers keyed by the full
stream id, the classic SLS fields plus pktRcvRetrans and others; `?publisher=<id>` answers
one publisher without a key; without it, only the raw API key in `Authorization` is
accepted (401 otherwise). Those payloads are built from the real OpenIRL legacy capture
(the same SRT_TRACEBSTATS fields) with irl-srt-server's extra fields, not from docs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from belabox_metrics.collectors.base import CollectorError
from belabox_metrics.logs import mask_secrets
from belabox_metrics.validation import ConfigError
from tests.unit.test_srt_support import FIXTURES, http_server, make_collector, now_ms, one, pick

REAL = FIXTURES / "openirl-real"


def real(name: str) -> dict[str, Any]:
    return json.loads((REAL / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def irl_srt_server(publisher: str, **counts: float) -> dict[str, Any]:
    """irl-srt-server's /stats answer for one publisher (fields of its handler)."""
    stats = dict(real("stats_legacy_live_2.json")["publishers"]["live"])
    stats.update({"pktSentNAKTotal": 40, "pktRecvNAKTotal": 0, "pktRetransTotal": 0,
                  "pktRcvRetrans": 52, "ringOverruns": 0, "sendBackpressure": 0,
                  "viewerPktSndDrop": 0, "ingestDiscontinuities": 0, "maxReaderBacklogBytes": 0,
                  "maxReaderBacklogMs": 0})
    stats.update(counts)
    return {"status": "ok", "publishers": {publisher: stats}}


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


def test_irl_srt_server_publisher_query_full_stream_id_and_retransmissions() -> None:
    with http_server() as server:
        server.set("/stats", json.dumps(irl_srt_server("publish/live/feed1")))
        collector = make_collector([{"type": "sls", "url": f"http://127.0.0.1:{server.port}/stats",
                                     "publisher": "publish/live/feed1"}])
        collector.collect(now_ms())
        assert server.requests[-1] == ("/stats?publisher=publish/live/feed1", None)
        server.set("/stats", json.dumps(irl_srt_server("publish/live/feed1", pktRcvLoss=60, pktRcvRetrans=58)))
        got = collector.collect(now_ms())
        labels = {"source": "sls", "stream": "publish/live/feed1"}
        assert one(got, "srt.stream_connected", **labels) == 1
        assert one(got, "srt.packets_lost_total", **labels, direction="receive") == 6
        assert one(got, "srt.packets_retransmitted_total", **labels, direction="receive") == 6
        # the stream ends: irl-srt-server answers an empty map for that publisher
        server.set("/stats", json.dumps({"status": "ok", "publishers": {}}))
        assert one(collector.collect(now_ms()), "srt.stream_connected", **labels) == 0


def test_an_app_name_for_a_stream_is_an_error_not_a_false_offline() -> None:
    with http_server() as server:
        server.set("/stats", json.dumps(irl_srt_server("publish/live/feed1")))
        url = f"http://127.0.0.1:{server.port}/stats"
        collector = make_collector([{"type": "sls", "url": url, "stream": "live"}])
        with pytest.raises(CollectorError, match=r"set `stream:` \(or `publisher:`\) to the full stream id"):
            collector.collect(now_ms())
        # the full id, or its trailing part, match as the server names it
        for stream in ("publish/live/feed1", "feed1"):
            got = make_collector([{"type": "sls", "url": url, "stream": stream}]).collect(now_ms())
            assert one(got, "srt.stream_connected", source="sls", stream=stream) == 1


def test_raw_api_key_from_a_0600_file_masked_everywhere(tmp_path: Path) -> None:
    key = "irlKey-6f1c2b9e-raw"
    key_file = tmp_path / "sls-api-key"
    key_file.write_text(key + "\n")
    os.chmod(key_file, 0o600)
    with http_server() as server:
        server.set("/stats", json.dumps(irl_srt_server("publish/live/feed1")))
        collector = make_collector([{"type": "sls", "url": f"http://127.0.0.1:{server.port}/stats",
                                     "api_key_file": str(key_file)}])
        got = collector.collect(now_ms())
        assert one(got, "srt.rtt_seconds", stream="publish/live/feed1") == pytest.approx(0.000198)
        assert server.requests[-1] == ("/stats", key)  # byte for byte, no "Bearer", no Basic
        assert key not in mask_secrets(f"server said {key}")
        # the server refuses: the hint names the option that fixes it
        server.set("/stats", '{"status":"error","message":"Unauthorized: API key required or invalid."}',
                   status=401)
        with pytest.raises(CollectorError, match=r"HTTP 401 .*api_key_file.*raw Authorization header"):
            collector.collect(now_ms())
    key_file.chmod(0o644)
    collector = make_collector([{"type": "sls", "url": "http://127.0.0.1:9/stats", "api_key_file": str(key_file)}])
    with pytest.raises(CollectorError, match="chmod 600"):
        collector.collect(now_ms())


@pytest.mark.parametrize(("options", "words"), [
    ({"url": "http://h:8181/stats?publisher=a/b/c", "publisher": "a/b/c"}, r"sources\[0\]\.publisher: the URL has a \?publisher= query as well\. Fix: keep one"),
    ({"url": "http://h:8181/stats", "api_key_file": "/k", "credentials_file": "/c"}, r"sources\[0\]\.api_key_file: is set together with credentials_file\. Fix: SLS takes"),
])
def test_conflicting_options_name_the_key_and_the_fix(options: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        make_collector([{"type": "sls", **options}])


def test_publisher_in_the_url_names_the_stream() -> None:
    with http_server() as server:
        server.set("/stats", json.dumps(irl_srt_server("publish/live/feed1")))
        got = make_collector([{"type": "sls", "url": f"http://127.0.0.1:{server.port}/stats?publisher=publish/live/feed1"}]
                             ).collect(now_ms())
        assert one(got, "srt.stream_connected", source="sls", stream="publish/live/feed1") == 1
