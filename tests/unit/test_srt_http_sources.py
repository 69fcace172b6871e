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
from tests.unit.test_srt_support import fixture_text, http_server, make_collector, now_ms, one, pick

# Classic SLS /stats as the real irlserver/irl-srt-server answered, ~3 s and ~6 s into a
# stream published as publish/live/feed1 (irl-srt-server-real/PROVENANCE).
SLS_LIVE = fixture_text("irl-srt-server-real/open_live_publisher_1.json")
SLS_LATER = fixture_text("irl-srt-server-real/open_live_publisher_2.json")
MEDIAMTX = fixture_text("mediamtx_srtconns_list_CONSTRUCTED.json")
SRTLA = fixture_text("irlserver_srtla_rec_metrics_sample.txt")


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


def test_srtla_prometheus_metrics() -> None:
    with http_server() as server:
        server.set("/metrics", SRTLA, content_type="text/plain")
        samples = make_collector([{"type": "srtla-prom",
                                   "url": f"http://127.0.0.1:{server.port}/metrics"}]).collect(now_ms())
        link = {"group": "44123", "link": "1"}
        assert one(samples, "srtla.conn_packets_lost_total", **link) == 42
        assert one(samples, "srtla.conn_rtt_seconds", **link) == pytest.approx(0.087)
        assert one(samples, "srtla.connections") == 3
        assert all(s.label("remote") is None for s in samples)  # no IP:port label at all


def srtla_links(links: dict[str, tuple[float, float, float]]) -> str:
    """The fixture's per-link series for links remote -> (rtt ms, window, in flight)."""
    lines = ["srtla_groups 1", f"srtla_connections {len(links)}"]
    for remote, (rtt, window, in_flight) in links.items():
        where = f'{{group="44123",remote="{remote}"}}'
        lines += [f"srtla_conn_bytes_received_total{where} 1000", f"srtla_conn_packets_lost_total{where} 4",
                  f"srtla_conn_rtt_ms{where} {rtt:g}", f"srtla_conn_window{where} {window:g}",
                  f"srtla_conn_in_flight{where} {in_flight:g}"]
    return "\n".join(lines) + "\n"


def test_srtla_links_keep_their_number_across_modem_reconnects() -> None:
    with http_server() as server:
        collector = make_collector([{"type": "srtla-prom", "url": f"http://127.0.0.1:{server.port}/metrics"}])

        def numbers(links: dict[str, tuple[float, float, float]]) -> dict[str, float]:
            server.set("/metrics", srtla_links(links), content_type="text/plain")
            got = collector.collect(now_ms())
            return {s.label("link") or "": s.value or 0 for s in pick(got, "srtla.conn_rtt_seconds")}

        assert numbers({"203.0.113.5:51000": (80, 2400, 10), "198.51.100.7:40000": (120, 2400, 10)}) == {
            "1": 0.12, "2": 0.08}
        # modem 203.0.113.5 reconnects from a new port: the same link number continues
        assert numbers({"203.0.113.5:51007": (81, 2400, 10), "198.51.100.7:40000": (121, 2400, 10)}) == {
            "1": 0.121, "2": 0.081}
        # modem 198.51.100.7 drops off for a poll and comes back with a new IP: lowest free number
        assert numbers({"203.0.113.5:51007": (82, 2400, 10)}) == {"2": 0.082}
        assert numbers({"203.0.113.5:51007": (83, 2400, 10), "192.0.2.44:40100": (90, 2400, 10)}) == {
            "1": 0.09, "2": 0.083}


def test_srtla_zeros_without_extended_keepalives_are_not_measurements() -> None:
    with http_server() as server:
        server.set("/metrics", srtla_links({"203.0.113.5:51000": (0, 0, 0), "198.51.100.7:40000": (95, 2400, 0)}),
                   content_type="text/plain")
        got = make_collector([{"type": "srtla-prom", "url": f"http://127.0.0.1:{server.port}/metrics"}]
                             ).collect(now_ms())
        plain = {"group": "44123", "link": "2"}  # 203.0.113.5 sorts after 198.51.100.7
        for metric in ("srtla.conn_rtt_seconds", "srtla.conn_window", "srtla.conn_in_flight"):
            assert pick(got, metric, **plain) == [], metric
        assert one(got, "srtla.conn_packets_lost_total", **plain) == 4  # its counters still count
        extended = {"group": "44123", "link": "1"}
        assert one(got, "srtla.conn_rtt_seconds", **extended) == pytest.approx(0.095)
        assert one(got, "srtla.conn_in_flight", **extended) == 0  # a real 0 next to a real RTT


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
