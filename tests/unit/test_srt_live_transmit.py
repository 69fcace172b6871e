"""srt-live-transmit JSON statistics: the real captures in tests/fixtures/srt/slt_*."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from belabox_metrics.collectors.base import CollectorError
from belabox_metrics.collectors.srt.common import SourceError, loss_percent
from belabox_metrics.collectors.srt.srt_live_transmit import parse_stats_line, parse_stats_lines
from tests.unit.test_srt_support import fixture_text, make_collector, one, pick

RECV_INTERVAL = fixture_text("slt_receiver_lossy_interval.json").strip()
SEND_INTERVAL = fixture_text("slt_sender_lossy_interval.json").strip()
RECV_CUMULATIVE = fixture_text("slt_receiver_lossy_fullstats_cumulative.json").strip()
MIXED = fixture_text("slt_sender_stdout_mixed.txt")


def test_parse_real_records() -> None:
    record = parse_stats_line(RECV_INTERVAL)
    assert record is not None
    assert record.recv.packets == 200 and record.recv.lost == 3
    assert record.recv.retransmitted == 3 and record.recv.dropped == 0
    assert record.rtt_ms == 0.085 and record.bandwidth_mbps == 507.84
    assert record.recv.mbit_rate == 3.01243 and record.recv.ms_buf == 196
    sender = parse_stats_line(SEND_INTERVAL)
    assert sender is not None and sender.send.packets == 203 and sender.send.lost == 4


def test_log_lines_are_skipped_and_broken_records_reported() -> None:
    records, problems = parse_stats_lines(MIXED.splitlines())
    assert [r.send.packets for r in records] == [209, 208]
    assert problems == []
    assert parse_stats_line("SRT target connected") is None
    with pytest.raises(SourceError, match="not valid JSON"):
        parse_stats_line('{"sid":1,"link":')
    with pytest.raises(SourceError, match=r"link\.rtt is missing"):
        parse_stats_line('{"sid":1,"link":{"bandwidth":1},"send":{},"recv":{}}')


def test_loss_definition() -> None:
    # Facts file: 100 × Δlost / (Δsent-or-received + Δlost); nothing moved -> no figure.
    assert loss_percent(3, 200) == pytest.approx(100 * 3 / 203)
    assert loss_percent(0, 250) == 0.0
    assert loss_percent(0, 0) is None


def append(path: Path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")


def with_counts(template: str, direction: str, **counts: float) -> str:
    data = json.loads(template)
    data[direction].update(counts)
    return json.dumps(data)


def test_interval_records_accumulate_into_totals(tmp_path: Path) -> None:
    stats = tmp_path / "recv.json"
    append(stats, "Accepted SRT source connection", RECV_INTERVAL)  # history before start
    collector = make_collector([{"type": "srt-live-transmit", "stats_file": str(stats),
                                 "stream": "uplink"}])
    now = int(time.time() * 1000)
    # History before start is a baseline (no counts), but a recent record says at once
    # what the link does now: an agent restarted mid-stream knows it is live.
    first = collector.collect(now)
    assert one(first, "srt.packets_received_total", source="srt-live-transmit", stream="uplink",
               direction="receive") == 0
    assert one(first, "srt.receive_rate_bits_per_second") == pytest.approx(3.01243e6)
    assert pick(first, "srt.packet_loss") == []
    append(stats, RECV_INTERVAL, with_counts(RECV_INTERVAL, "recv", packets=100, packetsLost=0,
                                             packetsRetransmitted=0, packetsDropped=2))
    samples = collector.collect(now + 1000)
    labels = {"source": "srt-live-transmit", "stream": "uplink", "direction": "receive"}
    assert one(samples, "srt.packets_received_total", **labels) == 300
    assert one(samples, "srt.packets_lost_total", **labels) == 3
    assert one(samples, "srt.packets_retransmitted_total", **labels) == 3
    assert one(samples, "srt.packets_dropped_total", **labels) == 2
    # SRT's definition: lost / original packets (300 received include 3 retransmissions
    # that recovered the 3 lost ones): 1 %, not 3 / 303
    assert one(samples, "srt.packet_loss", **labels) == pytest.approx(100 * 3 / (300 - 3 + 3))
    assert one(samples, "srt.rtt_seconds", stream="uplink") == pytest.approx(0.000085)
    assert one(samples, "srt.receive_rate_bits_per_second") == pytest.approx(3.01243e6)
    assert one(samples, "srt.buffer_seconds", direction="receive") == pytest.approx(0.196)
    assert one(samples, "srt.link_bandwidth_bits_per_second") == pytest.approx(507.84e6)
    assert pick(samples, "srt.packets_sent_total") == []  # a receiver sends no data
    # A partial line (write in progress) waits for its newline.
    with open(stats, "a", encoding="utf-8") as handle:
        handle.write(RECV_INTERVAL[:100])
    samples = collector.collect(now + 2000)
    assert pick(samples, "srt.packet_loss") == []  # no packets moved: no loss figure
    assert one(samples, "srt.packets_received_total", **labels) == 300
    with open(stats, "a", encoding="utf-8") as handle:
        handle.write(RECV_INTERVAL[100:] + "\n")
    samples = collector.collect(now + 3000)
    assert one(samples, "srt.packets_received_total", **labels) == 500


def test_cumulative_records_and_restart(tmp_path: Path) -> None:
    stats = tmp_path / "recv.json"
    collector = make_collector([{"type": "srt-live-transmit", "stats_file": str(stats),
                                 "counters": "cumulative"}])
    now = int(time.time() * 1000)
    with pytest.raises(CollectorError, match="does not exist"):
        collector.collect(now)
    append(stats, RECV_CUMULATIVE)  # appears after the agent started: all of it is new
    samples = collector.collect(now + 1000)
    assert one(samples, "srt.packets_received_total") == 1855
    assert one(samples, "srt.packets_lost_total") == 59
    # the real capture: 1855 received (packetsUnique 1855) with 59 retransmissions, 59 lost
    assert one(samples, "srt.packet_loss") == pytest.approx(100 * 59 / 1855)
    append(stats, with_counts(RECV_CUMULATIVE, "recv", packets=2055, packetsLost=61))
    samples = collector.collect(now + 2000)
    assert one(samples, "srt.packets_received_total") == 2055
    assert one(samples, "srt.packet_loss") == pytest.approx(100 * 2 / 202)
    # srt-live-transmit restarted: the file is truncated, a new socket counts from zero.
    restarted = json.loads(with_counts(RECV_CUMULATIVE, "recv", packets=100, packetsLost=1))
    restarted["sid"] = 42
    stats.write_text(json.dumps(restarted) + "\n")
    samples = collector.collect(now + 3000)
    assert one(samples, "srt.packets_received_total") == 2155
    assert one(samples, "srt.packets_lost_total") == 62


def test_stale_file_is_an_error_not_a_zero(tmp_path: Path) -> None:
    stats = tmp_path / "send.json"
    append(stats, SEND_INTERVAL)
    old = time.time() - 3600
    os.utime(stats, (old, old))
    collector = make_collector([{"type": "srt-live-transmit", "stats_file": str(stats),
                                 "stale_after": "5s"}])
    now = int(time.time() * 1000)
    collector.collect(now)
    with pytest.raises(CollectorError, match="no new stats record"):
        collector.collect(now + 1000)
    append(stats, SEND_INTERVAL)
    samples = collector.collect(now + 2000)
    assert one(samples, "srt.packets_sent_total", direction="send") == 203
    assert one(samples, "srt.send_rate_bits_per_second") == pytest.approx(3.07251e6)
    # 203 sent = 199 originals (packetsUnique) + 4 retransmissions of the 4 reported lost
    assert one(samples, "srt.packet_loss", direction="send") == pytest.approx(100 * 4 / 199)
    with pytest.raises(CollectorError, match="no new stats record"):
        collector.collect(now + 9000)
    assert collector.errors == {"srt-live-transmit#0": 2}


def test_fifo_stats(tmp_path: Path) -> None:
    fifo = tmp_path / "stats.pipe"
    os.mkfifo(fifo)
    collector = make_collector([{"type": "srt-live-transmit", "stats_file": str(fifo)}])
    now = int(time.time() * 1000)
    collector.collect(now)  # opens the read end (non-blocking)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, (MIXED + "\n").encode())
        samples = collector.collect(now + 1000)
        assert one(samples, "srt.packets_sent_total") == 209 + 208
    finally:
        os.close(writer)
        collector.close()


def test_first_poll_of_old_history_reports_nothing(tmp_path: Path) -> None:
    # A stats file last written a minute ago (srt-live-transmit stopped before the agent
    # started): its last record is history, not what the link does now.
    stats = tmp_path / "recv.json"
    append(stats, RECV_INTERVAL)
    now = int(time.time() * 1000)
    os.utime(stats, (now / 1000 - 60, now / 1000 - 60))
    collector = make_collector([{"type": "srt-live-transmit", "stats_file": str(stats),
                                 "stream": "uplink"}])
    assert collector.collect(now) == []
