"""The `srt` entry and the `srt.packet_loss` alias in a real config file."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.collectors.base import CollectorContext, lookup
from belabox_metrics.collectors.procfs import FsRoot
from belabox_metrics.collectors.srt import SrtCollector, SrtOptions
from belabox_metrics.collectors.srt_packet_loss import SrtPacketLossMock
from belabox_metrics.config import parse_config
from belabox_metrics.validation import ConfigError
from tests.unit.test_srt_support import fixture_text, http_server, now_ms

HEAD = textwrap.dedent("""
    device:
      id: belabox-001
    storage:
      path: data/metrics.db
    remote:
      url: http://127.0.0.1:8080/api/metrics
    metrics:
""")


def config(metrics: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(metrics), "  ")


def bad(metrics: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(metrics))
    return caught.value


def test_the_issue_example_parses() -> None:
    settings = parse_config(config("""
        - name: srt
          interval: 1s
          enabled: true
          sources:
            - {type: srt-live-transmit, stats_file: /run/belabox/srt-stats.json}
            - {type: sls, url: "http://server:8181/stats", stream: live}
            - {type: mediamtx, url: "http://server:9997", path: live}
            - {type: belaui, url: "ws://127.0.0.1/", password_file: /etc/belabox-metrics/belaui-password}
            - {type: openirl, url: "http://server:8080/stats/play", timeout: 500ms}
            - {type: srtla-prom, url: "http://server:9100/metrics", enabled: false}
    """))
    options = settings.metrics[0].options
    assert isinstance(options, SrtOptions)
    assert [s.type for s in options.sources] == [
        "srt-live-transmit", "sls", "mediamtx", "belaui", "openirl", "srtla-prom"]
    assert [s.timeout for s in options.sources][:5] == [2.0, 2.0, 2.0, 2.0, 0.5]
    assert options.sources[5].enabled is False
    # /etc is read-only under the hardened unit: the token goes to the state directory.
    assert options.sources[3].options.token_file == "/var/lib/belabox-metrics/belaui-token"
    assert options.sources[1].key == "metrics[0].sources[1]"


def test_unknown_source_type_names_the_key_and_the_valid_types() -> None:
    error = bad("""
        - name: srt
          sources:
            - {type: sls, url: "http://server:8181/stats"}
            - {type: srt-server, url: "http://server"}
    """)
    assert error.key == "metrics[0].sources[1].type"
    for valid in ("belaui", "mediamtx", "openirl", "sls", "srt-live-transmit", "srtla-prom"):
        assert valid in error.fix


@pytest.mark.parametrize(("metrics", "key", "text"), [
    ("- name: srt\n", "metrics[0].sources", "required"),
    ("- name: srt\n  sources: []\n", "metrics[0].sources", "no enabled source"),
    ("- name: srt\n  sources:\n    - {type: sls}\n", "metrics[0].sources[0].url", "required"),
    ("- name: srt\n  sources:\n    - {type: sls, url: 'ftp://x/stats'}\n",
     "metrics[0].sources[0].url", "not an http"),
    ("- name: srt\n  sources:\n    - {type: sls, url: 'http://u:p@x/stats'}\n",
     "metrics[0].sources[0].url", "credentials in the URL"),
    ("- name: srt\n  sources:\n    - {type: sls, url: 'http://x/stats', password: hunter2}\n",
     "metrics[0].sources[0].password", "not a known setting"),
    ("- name: srt\n  sources:\n    - {type: sls, url: 'http://x/stats', timeout: 2}\n",
     "metrics[0].sources[0].timeout", "not a duration"),
    ("- name: srt\n  sources:\n    - {type: belaui, url: 'http://x/'}\n",
     "metrics[0].sources[0].url", "ws://"),
    ("- name: srt\n  sources:\n    - {type: srt-live-transmit, stats_file: x, counters: total}\n",
     "metrics[0].sources[0].counters", "not one of"),
])
def test_bad_source_entries(metrics: str, key: str, text: str) -> None:
    error = bad(metrics)
    assert error.key == key
    assert text in str(error)


def test_disabled_srt_entry_needs_no_sources() -> None:
    settings = parse_config(config("""
        - name: srt
          enabled: false
        - name: srt.packet_loss
          mock: true
    """))
    assert settings.metrics[0].enabled is False


def ctx() -> CollectorContext:
    return CollectorContext(fs=FsRoot(), clock=FakeClock(), device_id="t",
                            log=logging.getLogger("test.srt"))


def test_packet_loss_alias_mock_and_real(tmp_path: Path) -> None:
    spec = lookup("srt.packet_loss", "metrics[0].name")
    mock = parse_config(config("- name: srt.packet_loss\n  mock: true\n")).metrics[0]
    collector = spec.factory(mock, ctx())
    assert isinstance(collector, SrtPacketLossMock)
    assert collector.collect(1)[0].label("source") == "mock"

    error = bad("- name: srt.packet_loss\n")
    assert error.key == "metrics[0].mock" and "sources" in error.fix
    error = bad("- name: srt.packet_loss\n  mock: true\n  sources:\n"
                "    - {type: sls, url: 'http://x/stats'}\n")
    assert "both set" in error.problem

    with http_server() as server:
        server.set("/v3/srtconns/list", fixture_text("mediamtx_srtconns_list_CONSTRUCTED.json"))
        real = parse_config(config(f"""
            - name: srt.packet_loss
              interval: 1s
              sources:
                - {{type: mediamtx, url: "http://127.0.0.1:{server.port}"}}
        """)).metrics[0]
        alias = spec.factory(real, ctx())
        assert isinstance(alias, SrtCollector)
        assert alias.collect(now_ms()) == []  # first poll: baseline
        # Nothing moved between two polls: no packets, so no loss figure at all.
        assert alias.collect(now_ms()) == []
        payload = json.loads(fixture_text("mediamtx_srtconns_list_CONSTRUCTED.json"))
        payload["items"][0]["packetsReceived"] += 97
        payload["items"][0]["packetsReceivedLoss"] += 3
        server.set("/v3/srtconns/list", json.dumps(payload))
        samples = alias.collect(now_ms())
        # Only the loss metric comes out of the alias.
        assert {s.name for s in samples} == {"srt.packet_loss"}
        assert [s.value for s in samples] == [3.0]
        assert samples[0].label("source") == "mediamtx"
