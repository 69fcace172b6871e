"""`metrics-collector status` fits a phone: health, backlog, last upload and error, then what a
streamer reads; `--all` lists every series with histograms as one line each. `query` prints
values exactly as stored. The agent is stopped here: everything comes from the database and
the uploader's record beside it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from belabox_metrics.cli.collector import main
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.runtime.upload_record import UploadRecord
from belabox_metrics.selfmetrics import DURATION_BUCKETS
from belabox_metrics.store.queue import SampleQueue

COLLECTORS = ("cpu", "memory", "disk", "network", "thermal", "system", "srt", "cpu.temperature", "srt.packet_loss")


def box_samples(now_ms: int) -> list[Sample]:
    """What a streaming box stores in a cycle: every family of docs/metrics.md that status
    shows, plus the self-metric histograms that made the old listing 200 lines long."""
    out: list[Sample] = []

    def add(name: str, value: float | None, text: str | None = None, **labels: str) -> None:
        out.append(Sample(name, value, now_ms, make_labels(**labels), text))

    for zone, celsius in (("soc-thermal", 78.5), ("bigcore0-thermal", 81.3), ("gpu-thermal", 70.1)):
        add("thermal.zone_celsius", celsius, zone=zone)
    add("cpu.temperature", 78.5, zone="soc-thermal")
    for core in ("all", *map(str, range(8))):
        add("cpu.usage_percent", 46.25, cpu=core)
    for policy, now, top in (("policy0", 1.8e9, 1.8e9), ("policy4", 2.256e9, 2.256e9), ("policy6", 1.608e9, 2.256e9)):
        add("cpu.frequency_hertz", now, policy=policy)
        add("cpu.frequency_max_hertz", top, policy=policy)
    add("system.load1", 3.12)
    add("memory.available_bytes", 5.57e9)
    add("memory.total_bytes", 8.23e9)
    stream = {"source": "srt-live-transmit", "stream": "live"}
    add("srt.rtt_seconds", 0.0237, **stream)
    add("srt.packet_loss", 1.9, direction="send", **stream)
    add("srt.send_rate_bits_per_second", 3_072_510.0, **stream)
    add("srt.packets_dropped_total", 4, direction="send", **stream)
    add("srt.buffer_seconds", 0.01, direction="send", **stream)
    add("belabox.streaming_live", 1, source="belaui")
    for interface, rate in (("usb0", 98_211.0), ("wwan0", 0.0)):
        add("belabox.modem_throughput_bytes_per_second", rate, interface=interface, source="belaui")
        add("network.transmit_bytes_per_second", rate, interface=interface)
    add("belabox.modem_signal_percent", 72, modem="0", source="belaui")
    add("belabox.modem_network", None, "T-Mobile", modem="0", source="belaui")
    add("belabox.modem_technology", None, "4G", modem="0", source="belaui")
    add("time.skew_ms", 474.37381744384766)
    # 50 runs under 0.5 ms, 40 more under 5 ms, 10 more under 10 ms: p95 is half-way into
    # (5 ms, 10 ms], as histogram_quantile says.
    for collector in COLLECTORS:
        cumulative = 0
        for bound in DURATION_BUCKETS:
            cumulative = 50 if bound < 0.005 else 90 if bound < 0.01 else 100
            add("collector.collection_duration_seconds_bucket", cumulative, collector=collector, le=f"{bound:g}")
        add("collector.collection_duration_seconds_bucket", 100, collector=collector, le="+Inf")
        add("collector.collection_duration_seconds_sum", 0.2, collector=collector)
        add("collector.collection_duration_seconds_count", 100, collector=collector)
        add("collector.metrics_collected_total", 1234, collector=collector)
    return out


@pytest.fixture
def stopped_box(tmp_path: Path) -> Path:
    db = tmp_path / "metrics.db"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
device: {{id: bag-box}}
storage: {{path: {db}}}
remote: {{url: "http://127.0.0.1:9/api/v1/import", format: vm-jsonl}}
health: {{listen: "127.0.0.1:{_closed_port()}"}}
metrics: [{{name: memory}}]
""")
    queue = SampleQueue.open(str(db))
    queue.append(box_samples(int(time.time() * 1000) - 5_000))
    queue.close()
    record = UploadRecord(str(db))
    record.note("no answer: timed out after 10s", int(time.time() * 1000) - 90_000)
    return cfg


def _closed_port() -> int:
    from tests.helpers import free_port

    return free_port()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(list(args))
    return code, capsys.readouterr().out.splitlines()


def test_status_is_one_short_screen(stopped_box: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run(capsys, "status", "--config", str(stopped_box))
    assert code == 1  # the agent does not answer
    text = "\n".join(lines)
    assert len(lines) <= 20, text
    assert max(len(line) for line in lines) <= 110, text
    assert lines[0].startswith("bag-box: agent not answering")
    assert "last acknowledged never" in text
    assert "last error: no answer: timed out after 10s (90s ago)" in text  # from disk: the agent is stopped
    assert "backlog  " in text and " not yet uploaded to http://127.0.0.1:9/api/v1/import" in text
    assert "temp     bigcore0 81.3  gpu 70.1  soc 78.5 °C" in text
    assert "stream   LIVE (belaUI)" in text
    assert ("SRT      srt-live-transmit live: rtt 24 ms, loss 1.9 %, send 3.07 Mbit/s, dropped 4, buf 0.01 s"
            in text)
    assert "uplinks  usb0 98.2 kB/s  wwan0 0 B/s" in text
    assert "modem 0  signal 72 % T-Mobile 4G" in text
    assert "CPU      46 %  load 3.12  freq 1.80 2.26 1.61 (max 2.26) GHz" in text
    assert "_bucket" not in text and "collection_duration" not in text  # histograms are for --all


def test_status_all_lists_every_series_with_histograms_on_one_line(
        stopped_box: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, lines = run(capsys, "status", "--config", str(stopped_box), "--all")
    text = "\n".join(lines)
    assert "_bucket" not in text and "_sum" not in text and "_count" not in text
    histograms = [line for line in lines if "collector.collection_duration_seconds" in line]
    assert len(histograms) == len(COLLECTORS)
    assert all("count 100  mean 0.002  p95 0.0075" in line for line in histograms), histograms
    assert any(line.strip().startswith("time.skew_ms") and "474.37381744384766" in line for line in lines)
    assert any("belabox.modem_network" in line and "'T-Mobile'" in line for line in lines)
    # Bounded by the series, not by their buckets: 9 collectors x 13 bucket/sum/count rows gone.
    assert len(lines) < 90


def test_query_prints_values_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "m.db"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
device: {{id: q}}
storage: {{path: {db}}}
remote: {{url: "http://127.0.0.1:9/api/metrics"}}
metrics: [{{name: memory}}]
""")
    queue = SampleQueue.open(str(db))
    now = int(time.time() * 1000)
    values = [46.0, 0.1 + 0.2, 3.5999999999999994e-05, 5_158_361.374449505, 123456789.123456789, -0.5]
    queue.append([Sample("x.value", v, now + i, ()) for i, v in enumerate(values)])
    queue.close()
    code, lines = run(capsys, "query", "--config", str(cfg), "--last", "10")
    assert code == 0
    shown = [line.split()[2] for line in lines[1:-1]]
    assert shown == ["46", "0.30000000000000004", "3.5999999999999994e-05", "5158361.374449505",
                     "123456789.12345679", "-0.5"]
    assert [float(v) for v in shown] == values  # every digit that was stored
