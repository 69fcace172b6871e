"""The six host collectors are enabled by name in the config's `metrics:` list, each with
its own options; unknown options and bad regexes are refused with the key named."""

from __future__ import annotations

import pytest

from belabox_metrics.collectors import cpu, disk, network, thermal
from belabox_metrics.config import parse_config
from belabox_metrics.validation import ConfigError

BASE = """
device: {id: belabox-001}
storage: {path: /tmp/x.db}
remote: {url: "http://127.0.0.1:8080/api/metrics"}
metrics:
"""


def metrics(*entries: str) -> dict[str, object]:
    settings = parse_config(BASE + "".join(f"  - {e}\n" for e in entries))
    return {m.name: m for m in settings.metrics}


def test_all_six_with_defaults() -> None:
    parsed = metrics("{name: cpu}", "{name: memory}", "{name: disk}", "{name: network}",
                     "{name: thermal}", "{name: system}")
    assert set(parsed) == {"cpu", "memory", "disk", "network", "thermal", "system"}
    assert parsed["network"].options == network.Options()  # type: ignore[attr-defined]
    assert network.Options().exclude == network.DEFAULT_EXCLUDE


def test_options_are_read() -> None:
    parsed = metrics(
        "{name: cpu, interval: 2s, per_core: false, frequency: false}",
        "{name: disk, devices: 'nvme0n1|mmcblk0'}",
        "{name: network, include: 'usb.*|wwan.*', exclude: '', max_interfaces: 8}",
        "{name: thermal, trip_points: true, mock: true}",
    )
    assert parsed["cpu"].options == cpu.Options(per_core=False, frequency=False)  # type: ignore[attr-defined]
    assert parsed["cpu"].interval == 2.0  # type: ignore[attr-defined]
    assert parsed["disk"].options == disk.Options(devices="nvme0n1|mmcblk0")  # type: ignore[attr-defined]
    assert parsed["network"].options == network.Options(  # type: ignore[attr-defined]
        include="usb.*|wwan.*", exclude=None, max_interfaces=8)
    assert parsed["thermal"].options == thermal.Options(trip_points=True)  # type: ignore[attr-defined]
    assert parsed["thermal"].mock is True  # type: ignore[attr-defined]


@pytest.mark.parametrize(("entry", "key"), [
    ("{name: cpu, percore: false}", "metrics[0].percore"),
    ("{name: disk, devices: '(unclosed'}", "metrics[0].devices"),
    ("{name: network, max_interfaces: 0}", "metrics[0].max_interfaces"),
    ("{name: network, exclude: '[bad'}", "metrics[0].exclude"),
    ("{name: memory, mock: true}", "metrics[0].mock"),
])
def test_bad_options_name_the_key(entry: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        metrics(entry)
    assert caught.value.key == key
