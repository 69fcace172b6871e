"""SLS, MediaMTX and srtla Prometheus sources against a local HTTP server serving the
researched payloads, then the ways a server goes wrong (OpenIRL, as the real server
answers: test_sls_sources.py)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from belabox_metrics.collectors.base import CollectorError
from belabox_metrics.collectors.srt.common import http_get
from belabox_metrics.collectors.srt.srtla_prom import LinkNumbers
from tests.unit.test_srt_support import fixture_text, http_server, make_collector, now_ms, one, pick

# Classic SLS /stats as the real irlserver/irl-srt-server answered, ~3 s and ~6 s into a
# stream published as publish/live/feed1 (irl-srt-server-real/PROVENANCE).
SLS_LIVE = fixture_text("irl-srt-server-real/open_live_publisher_1.json")
SLS_LATER = fixture_text("irl-srt-server-real/open_live_publisher_2.json")
MEDIAMTX = fixture_text("mediamtx_srtconns_list_CONSTRUCTED.json")
SRTLA_REAL = ("metrics_streaming_1.txt", "metrics_streaming_2.txt", "metrics_link_rejoined_overlap.txt",
              "metrics_link_rejoined.txt")  # srtla-real/, in the order they were captured


def test_sls_classic_publisher_by_stream_name() -> None:
    with http_server() as server:
        server.set("/stats", SLS_LIVE)
        collector = make_collector([{"type": "sls", "url": f"http://127.0.0.1:{server.port}/stats",
                                     "stream": "feed1"}])
        samples = collector.collect(now_ms())
        labels = {"source": "sls", "stream": "feed1"}
        assert one(samples, "srt.rtt_seconds", **labels) == pytest.approx(0.000185)
        assert one(samples, "srt.receive_rate_bits_per_second", **labels) == pytest.approx(2.7082305946175493e6)
        assert one(samples, "srt.link_bandwidth_bits_per_second", **labels) == pytest.approx(13.848e6)
        assert one(samples, "srt.stream_bitrate_bits_per_second", **labels) == 2_639_000
        assert one(samples, "srt.buffer_seconds", **labels) == pytest.approx(0.489)
        assert one(samples, "srt.uptime_seconds", **labels) == 3
        assert one(samples, "srt.stream_connected", **labels) == 1
        # SLS has no packets-received count: no loss percent is made up.
        assert pick(samples, "srt.packet_loss") == []
        # Counters start at the agent's first poll; the next poll adds what moved (30 -> 57).
        assert one(samples, "srt.packets_lost_total", **labels) == 0
        server.set("/stats", SLS_LATER)
        samples = collector.collect(now_ms())
        assert one(samples, "srt.packets_lost_total", **labels) == 27
        assert one(samples, "srt.packets_retransmitted_total", **labels) == 28
        assert one(samples, "srt.packets_dropped_total", **labels) == 0
        # A reset of SLS's counters (the value went down): the agent's total stays monotonic.
        moved = json.loads(SLS_LATER)
        moved["publishers"]["publish/live/feed1"]["pktRcvLoss"] = 3
        server.set("/stats", json.dumps(moved))
        samples = collector.collect(now_ms())
        assert one(samples, "srt.packets_lost_total", **labels) == 30
        assert collector.errors == {"sls#0": 0}


def test_sls_all_publishers_and_absent_stream() -> None:
    with http_server() as server:
        server.set("/stats", SLS_LATER)
        url = f"http://127.0.0.1:{server.port}/stats"
        samples = make_collector([{"type": "sls", "url": url}]).collect(now_ms())
        assert one(samples, "srt.rtt_seconds", stream="publish/live/feed1") == pytest.approx(0.000146)
        absent = make_collector([{"type": "sls", "url": url, "stream": "other"}]).collect(now_ms())
        # The server answered: the stream is really not there. That is a 0, not an error.
        assert [(s.name, s.value) for s in absent] == [("srt.stream_connected", 0.0)]


def test_mediamtx_loss_percent_over_the_interval() -> None:
    with http_server() as server:
        server.set("/v3/srtconns/list", MEDIAMTX)
        collector = make_collector([{"type": "mediamtx", "url": f"http://127.0.0.1:{server.port}",
                                     "path": "live"}])
        labels = {"source": "mediamtx", "stream": "live"}
        first = collector.collect(now_ms())
        # History before the first poll is a baseline, not "this interval".
        assert pick(first, "srt.packet_loss") == []
        assert one(first, "srt.rtt_seconds", **labels) == pytest.approx(0.00007)
        assert one(first, "srt.receive_rate_bits_per_second", **labels) == pytest.approx(2.63305e6)
        assert one(first, "srt.buffer_seconds", **labels) == pytest.approx(0.195)
        assert one(first, "srt.link_bandwidth_bits_per_second", **labels) == pytest.approx(581.016e6)
        payload = json.loads(MEDIAMTX)
        item = payload["items"][0]
        item["packetsReceived"] += 291
        item["packetsReceivedLoss"] += 9
        item["packetsReceivedRetrans"] += 9
        item["packetsReceivedDrop"] += 1
        server.set("/v3/srtconns/list", json.dumps(payload))
        second = collector.collect(now_ms())
        # 291 received include the 9 retransmissions that recovered the 9 lost: 9 / 291
        assert one(second, "srt.packet_loss", **labels) == pytest.approx(100 * 9 / 291)
        assert one(second, "srt.packets_received_total", **labels) == 291
        assert one(second, "srt.packets_retransmitted_total", **labels) == 9
        assert one(second, "srt.packets_dropped_total", **labels) == 1
        # A reconnect is a new connection id whose counters start from zero.
        item["id"] = "new-connection"
        item["packetsReceived"], item["packetsReceivedLoss"] = 100, 0
        server.set("/v3/srtconns/list", json.dumps(payload))
        third = collector.collect(now_ms())
        assert one(third, "srt.packets_received_total", **labels) == 391
        assert one(third, "srt.packet_loss", **labels) == 0.0


def srtla(name: str) -> str:
    return fixture_text(f"srtla-real/{name}")


def test_srtla_prometheus_metrics_as_srtla_rec_serves_them() -> None:
    with http_server() as server:
        server.set("/metrics", srtla("metrics_streaming_2.txt"), content_type="text/plain")
        samples = make_collector([{"type": "srtla-prom",
                                   "url": f"http://127.0.0.1:{server.port}/metrics"}]).collect(now_ms())
        # remote="::ffff:32804" and "::ffff:41066" (srtla_rec loses the IP): links 1 and 2
        assert one(samples, "srtla.conn_bytes_received_total", group="47141", link="1") == 1252184
        assert one(samples, "srtla.conn_bytes_received_total", group="47141", link="2") == 835960
        assert one(samples, "srtla.conn_packets_lost_total", group="47141", link="2") == 0
        assert one(samples, "srtla.conn_weight_percent", group="47141", link="1") == 100
        assert one(samples, "srtla.conn_extended_keepalives", group="47141", link="1") == 0
        assert one(samples, "srtla.connections") == 2
        assert one(samples, "srtla.groups_established") == 1
        assert one(samples, "srtla.forwarded_packets_total") == 2722
        assert one(samples, "srtla.groups_removed_total", reason="srt_error") == 0
        assert one(samples, "srtla.build_info", version="1.0.0") == 1
        assert all(s.label("remote") is None for s in samples)  # no remote label at all
        assert all(s.label("source") == "srtla-prom" for s in samples)
        # srtla_send here sends no extended keepalives: srtla_rec's zeros are not stored
        for metric in ("srtla.conn_rtt_seconds", "srtla.conn_window", "srtla.conn_in_flight",
                       "srtla.conn_sender_bitrate_bytes_per_second"):
            assert pick(samples, metric) == [], metric
        assert len(pick(samples, "srtla.conn_bytes_received_total")) == 2


def test_srtla_without_detail_or_connections_has_totals_only() -> None:
    with http_server() as server:
        collector = make_collector([{"type": "srtla-prom", "url": f"http://127.0.0.1:{server.port}/metrics"}])
        for name in ("metrics_summary_idle.txt", "metrics_idle.txt"):
            server.set("/metrics", srtla(name), content_type="text/plain")
            samples = collector.collect(now_ms())
            assert one(samples, "srtla.connections") == 0, name
            assert one(samples, "srtla.groups") == 0, name
            assert [s.name for s in samples if s.label("link") is not None] == [], name


def test_srtla_link_keeps_its_number_when_its_modem_rejoins() -> None:
    """srtla_send dropped the link from 127.0.0.2 and opened it again: srtla_rec lists the
    old connection (silent for 7 s) next to the new one until it times out."""
    with http_server() as server:
        collector = make_collector([{"type": "srtla-prom", "url": f"http://127.0.0.1:{server.port}/metrics"}])
        seen = []
        for name in SRTLA_REAL:
            server.set("/metrics", srtla(name), content_type="text/plain")
            got = collector.collect(now_ms())
            seen.append({s.label("link"): s.value for s in pick(got, "srtla.conn_bytes_received_total")})
        assert seen == [
            {"1": 644396, "2": 433388},
            {"1": 1252184, "2": 835960},
            # the new connection continues link 1 (a counter reset); the silent one is dropped
            {"1": 291796, "2": 2565636},
            {"1": 1774452, "2": 4807200},
        ]


def test_srtla_link_numbers_go_to_new_connections_gone_or_silent_first() -> None:
    links = LinkNumbers()
    assert links.assign("g", {"::ffff:1000": 0, "::ffff:2000": 1}) == {"::ffff:1000": 1, "::ffff:2000": 2}
    # link 1 is gone from the list: its number passes to the next new connection
    assert links.assign("g", {"::ffff:2000": 0}) == {"::ffff:2000": 2}
    assert links.assign("g", {"::ffff:2000": 0, "::ffff:3000": 0}) == {"::ffff:2000": 2, "::ffff:3000": 1}
    # silent for 4 s is not yet dead: a new connection gets a number of its own
    assert links.assign("g", {"::ffff:2000": 4, "::ffff:3000": 0, "::ffff:4000": 0}) == {
        "::ffff:2000": 2, "::ffff:3000": 1, "::ffff:4000": 3}
    # two silent ones: the longest silent is taken over, and is not reported any more
    assert links.assign("g", {"::ffff:2000": 9, "::ffff:3000": 0, "::ffff:4000": 6, "::ffff:5000": 0}) == {
        "::ffff:3000": 1, "::ffff:4000": 3, "::ffff:5000": 2}
    assert links.assign("g", {"::ffff:2000": 10, "::ffff:3000": 0, "::ffff:4000": 7, "::ffff:5000": 0}) == {
        "::ffff:3000": 1, "::ffff:4000": 3, "::ffff:5000": 2}
    # the same IP comes first where srtla_rec prints one
    links = LinkNumbers()
    links.assign("g", {"10.0.0.1:1": 0, "10.0.0.2:1": 0})
    links.assign("g", {})
    assert links.assign("g", {"10.0.0.2:7": 0}) == {"10.0.0.2:7": 2}


def with_keepalives(body: str, remote: str, rtt_ms: int, window: int, in_flight: int) -> str:
    """A real answer with one link's sender switched to extended keepalives: no sender that
    sends them could run here (srtla_send of irlserver/srtla does not)."""
    values = {"srtla_conn_rtt_ms": rtt_ms, "srtla_conn_window": window, "srtla_conn_in_flight": in_flight,
              "srtla_conn_sender_bitrate_bytes_per_second": 250000, "srtla_conn_extended_keepalives": 1}
    lines = []
    for line in body.splitlines():
        name = line.split("{")[0]
        if name in values and f'remote="{remote}"' in line:
            line = f"{line.rsplit(' ', 1)[0]} {values[name]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_srtla_values_from_extended_keepalives_are_stored_even_when_0() -> None:
    body = with_keepalives(srtla("metrics_streaming_2.txt"), "::ffff:41066", rtt_ms=95, window=2400, in_flight=0)
    with http_server() as server:
        server.set("/metrics", body, content_type="text/plain")
        got = make_collector([{"type": "srtla-prom", "url": f"http://127.0.0.1:{server.port}/metrics"}]
                             ).collect(now_ms())
        extended = {"group": "47141", "link": "2"}
        assert one(got, "srtla.conn_rtt_seconds", **extended) == pytest.approx(0.095)
        assert one(got, "srtla.conn_window", **extended) == 2400
        assert one(got, "srtla.conn_in_flight", **extended) == 0  # a real 0 from a sender that reports
        assert one(got, "srtla.conn_sender_bitrate_bytes_per_second", **extended) == 250000
        plain = {"group": "47141", "link": "1"}
        for metric in ("srtla.conn_rtt_seconds", "srtla.conn_window", "srtla.conn_in_flight",
                       "srtla.conn_sender_bitrate_bytes_per_second"):
            assert pick(got, metric, **plain) == [], metric
        assert one(got, "srtla.conn_bytes_received_total", **plain) == 1252184  # its counters still count


def test_srtla_without_the_keepalive_gauge_all_zero_means_none() -> None:
    body = with_keepalives(srtla("metrics_streaming_2.txt"), "::ffff:41066", rtt_ms=95, window=2400, in_flight=0)
    body = "\n".join(line for line in body.splitlines() if "extended_keepalives" not in line) + "\n"
    with http_server() as server:
        server.set("/metrics", body, content_type="text/plain")
        got = make_collector([{"type": "srtla-prom", "url": f"http://127.0.0.1:{server.port}/metrics"}]
                             ).collect(now_ms())
        assert one(got, "srtla.conn_in_flight", group="47141", link="2") == 0
        assert pick(got, "srtla.conn_rtt_seconds", group="47141", link="1") == []
        assert pick(got, "srtla.conn_sender_bitrate_bytes_per_second", group="47141", link="1") == []


@pytest.mark.parametrize(("status", "expected"), [
    (401, "HTTP 401"), (403, "HTTP 403"), (404, "HTTP 404"), (500, "HTTP 500"),
])
def test_http_errors_give_no_samples_and_a_counted_reason(status: int, expected: str) -> None:
    with http_server() as server:
        server.set("/stats", "{}", status=status)
        collector = make_collector([{"type": "sls", "url": f"http://127.0.0.1:{server.port}/stats"}])
        for _ in range(3):
            with pytest.raises(CollectorError, match=expected):
                collector.collect(now_ms())
        assert collector.errors == {"sls#0": 3}
        assert collector.last_error is not None and expected in collector.last_error
        assert collector.degraded


@pytest.mark.parametrize(("body", "expected"), [
    ("<html>nginx error</html>", "not valid JSON"),
    ('{"status":"ok"}', "publishers is missing"),
    ('{"publishers":{"live":{"rtt":"fast"}},"status":"ok"}', "not a number"),
    ('{"publishers":{"live":{"rtt":1}},"status":"ok"}', "is missing"),
    ('{"publishers":{},"status":"error"}', "status is 'error'"),
    ("[1,2,3]", "not a JSON object"),
])
def test_garbage_and_changed_shapes(body: str, expected: str) -> None:
    with http_server() as server:
        server.set("/stats", body)
        collector = make_collector([{"type": "sls", "url": f"http://127.0.0.1:{server.port}/stats"}])
        with pytest.raises(CollectorError, match=expected):
            collector.collect(now_ms())
        assert collector.errors["sls#0"] == 1


def test_mediamtx_missing_fields_and_garbage() -> None:
    with http_server() as server:
        broken = json.loads(MEDIAMTX)
        del broken["items"][0]["msRTT"]
        server.set("/v3/srtconns/list", json.dumps(broken))
        collector = make_collector([{"type": "mediamtx", "url": f"http://127.0.0.1:{server.port}"}])
        with pytest.raises(CollectorError, match="msRTT is missing"):
            collector.collect(now_ms())
        older = json.loads(MEDIAMTX)
        for key in ("packetsReceivedRetrans", "packetsReceivedLoss"):
            del older["items"][0][key]
        server.set("/v3/srtconns/list", json.dumps(older))
        with pytest.raises(CollectorError, match=r"no packetsReceivedLoss, packetsReceivedRetrans: "
                                                 r"MediaMTX before 1\.6 .*upgrade MediaMTX to 1\.6"):
            collector.collect(now_ms())
        server.set("/v3/srtconns/list", '{"itemCount": 0}')
        with pytest.raises(CollectorError, match="items is missing"):
            collector.collect(now_ms())


def test_stalling_and_trickling_servers_time_out() -> None:
    with http_server() as server:
        server.set("/stall", SLS_LIVE, delay=8.0)
        server.set("/trickle", SLS_LIVE, trickle=0.05)  # ~12 s for the whole body
        for path in ("/stall", "/trickle"):
            collector = make_collector([{"type": "sls", "timeout": "300ms",
                                         "url": f"http://127.0.0.1:{server.port}{path}"}])
            started = time.monotonic()
            with pytest.raises(CollectorError, match=r"within 0\.3s"):
                collector.collect(now_ms())
            assert time.monotonic() - started < 1.5


def test_one_slow_source_does_not_hold_the_others() -> None:
    with http_server() as server:
        server.set("/stats", SLS_LIVE)
        server.set("/stall", SLS_LIVE, delay=5.0)
        base = f"http://127.0.0.1:{server.port}"
        collector = make_collector([
            {"type": "sls", "url": base + "/stall", "timeout": "400ms"},
            {"type": "sls", "url": base + "/stats", "stream": "feed1"},
            {"type": "sls", "url": "http://127.0.0.1:9/stats"},  # discard port: refused
        ])
        started = time.monotonic()
        samples = collector.collect(now_ms())
        elapsed = time.monotonic() - started
        assert elapsed < 4.5  # below the stalled source's 5 s: it did not hold the round (slack for a busy box)
        assert one(samples, "srt.stream_connected", stream="feed1") == 1
        assert collector.errors == {"sls#0": 1, "sls#1": 0, "sls#2": 1}
        status = {s["name"]: s for s in collector.source_status()}
        assert "within 0.4s" in status["sls#0"]["last_error"]
        assert "refused" in status["sls#2"]["last_error"]
        assert status["sls#1"]["last_ok_ms"] is not None
        collector.close()


def test_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    collector = make_collector([{"type": "sls", "url": "http://127.0.0.1:9/stats"}])
    with caplog.at_level(logging.WARNING):
        for _ in range(10):
            with pytest.raises(CollectorError):
                collector.collect(now_ms())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert collector.errors == {"sls#0": 10}


def test_credentials_file_basic_auth_and_permissions(tmp_path: Path) -> None:
    secret = tmp_path / "mediamtx-credentials"
    secret.write_text("metrics:s3cret-pass\n")
    with http_server() as server:
        server.set("/v3/srtconns/list", MEDIAMTX)
        source = {"type": "mediamtx", "url": f"http://127.0.0.1:{server.port}",
                  "credentials_file": str(secret)}
        os.chmod(secret, 0o644)
        collector = make_collector([source])
        with pytest.raises(CollectorError, match="chmod 600"):
            collector.collect(now_ms())
        assert server.requests == []  # refused before any request
        os.chmod(secret, 0o600)
        collector.collect(now_ms())
        assert server.requests[-1][1] == "Basic bWV0cmljczpzM2NyZXQtcGFzcw=="


def test_http_get_returns_body_and_caps_size() -> None:
    with http_server() as server:
        server.set("/big", b"x" * 5000)
        url = f"http://127.0.0.1:{server.port}/big"
        assert http_get(url, 2.0) == b"x" * 5000
        with pytest.raises(Exception, match="larger than 1000 bytes"):
            http_get(url, 2.0, max_bytes=1000)
