"""The real belaUI (../shared/realsrc/belaui: the unmodified belaUI.js under Node, hardware
stubbed) read by the real agent into a real VictoriaMetrics:

    belaUI.js (mmcli/ifconfig stubs, thermal_zone0 = 52.7 °C) --ws--> metrics-collector --vm-jsonl--> VictoriaMetrics

What a streamer needs, checked in VictoriaMetrics: the box streams, its modem's throughput
(the ifconfig stub's TX counter grows 250,000 B/s), signal and the SoC temperature; the max
bitrate the stream was started with (config.max_br at login); an unplugged modem ends its
series and the modem count drops within 10 s; a second source with a wrong password says
"belaUI refused the password" with the fix and does not retry in a loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, free_port, wait_for_port
from tests.realsrc.harness import Client, running_belaui
from tests.vm import VictoriaMetrics

PASSWORD = "real-belaui-pw-8841"
DEVICE = "belaui-box-3"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
pytestmark = pytest.mark.timeout(240)


def secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    os.chmod(path, 0o600)
    return path


def latest(vm: VictoriaMetrics, promql: str) -> list[tuple[dict[str, str], float]]:
    result = vm.query(promql)["data"]["result"]  # type: ignore[index]
    return [(r["metric"], float(r["value"][1])) for r in result]  # type: ignore[index]


def wait_until(what: str, check: Callable[[], Any], timeout: float, agent: subprocess.Popen[bytes],
               log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert agent.poll() is None, f"agent exited: {log.read_text()[-2000:]}"
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g}s; agent log: {log.read_text()[-2000:]}")


def start_stream(url: str, max_br: int) -> None:
    client = Client(url)
    try:
        client.send({"auth": {"password": PASSWORD, "persistent_token": False}})
        pipelines = client.until(lambda m: "pipelines" in m, 20, "pipelines")["pipelines"]
        pipeline = next(k for k, v in pipelines.items() if v.get("name") == "generic/test")
        client.send({"start": {"pipeline": pipeline, "delay": 0, "max_br": max_br, "srt_latency": 2000,
                               "bitrate_overlay": False, "srtla_addr": "127.0.0.1", "srtla_port": 5000,
                               "srt_streamid": "test"}})
        client.until(lambda m: m.get("status", {}).get("is_streaming") is True, 20, "is_streaming")
    finally:
        client.close()


def test_real_belaui_into_victoria_metrics(tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    vm = victoria_metrics
    with running_belaui(tmp_path / "belaui", free_port(), password=PASSWORD) as box:
        start_stream(box.url, 4200)
        good = secret(tmp_path / "good-password", PASSWORD)
        wrong = secret(tmp_path / "wrong-password", "not-the-password")
        health_port = free_port()
        config = tmp_path / "config.yaml"
        config.write_text(f"""
device: {{id: {DEVICE}}}
storage: {{path: {tmp_path / 'agent.db'}}}
remote:
  url: {vm.import_url}
  format: vm-jsonl
  interval: 1s
  timeout: 5s
  shutdown_grace: 5s
health: {{listen: "127.0.0.1:{health_port}"}}
logging: {{level: info, format: json}}
metrics:
  - name: srt
    interval: 1s
    sources:
      - {{type: belaui, url: "{box.url}", password_file: {good}, token_file: {tmp_path / 'good-token'}}}
      - {{type: belaui, url: "{box.url}", password_file: {wrong}, token_file: {tmp_path / 'wrong-token'}}}
""")
        log = tmp_path / "agent.log"
        with log.open("wb") as out:
            agent = subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)],
                                     env=ENV, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_port("127.0.0.1", health_port, timeout=60, proc=agent)
            sel = f'device_id="{DEVICE}",source="belaui"'

            # live state, throughput per modem, signal, temperature, max bitrate
            wait_until("the box streaming, with its modem, in VictoriaMetrics", lambda: all(
                latest(vm, q) for q in (f"belabox_streaming_live{{{sel}}} == 1",
                                        f'belabox_modem_throughput_bytes_per_second{{{sel},interface="wwan0"}} > 0',
                                        f'belabox_modem_signal_percent{{{sel},modem="0"}}',
                                        f"belabox_modems{{{sel}}} == 1",
                                        f"belabox_soc_temperature_celsius{{{sel}}}",
                                        f"belabox_max_bitrate_bits_per_second{{{sel}}}")), 90, agent, log)
            [(_, throughput)] = latest(vm, f'avg_over_time(belabox_modem_throughput_bytes_per_second{{{sel},interface="wwan0"}}[20s])')
            assert throughput == pytest.approx(250_000, rel=0.05)
            assert latest(vm, f'belabox_modem_signal_percent{{{sel},modem="0"}}')[0][1] == 71
            assert latest(vm, f"belabox_soc_temperature_celsius{{{sel}}}")[0][1] == pytest.approx(52.7)
            assert latest(vm, f"belabox_max_bitrate_bits_per_second{{{sel}}}")[0][1] == 4_200_000

            # the modem is unplugged: its series ends and the count drops within 10 s
            unplugged_ms = int(time.time() * 1000)
            unplugged = time.monotonic()
            box.set_modem(False)
            wait_until("belabox_modems 0 in VictoriaMetrics", lambda: latest(
                vm, f"belabox_modems{{{sel}}} == 0"), 30, agent, log)
            assert time.monotonic() - unplugged <= 10.0
            wait_until("no sample of the unplugged modem for 3 s", lambda: time.time() * 1000 > unplugged_ms + 5000,
                       30, agent, log)
            vm.flush()
            signal = [ts for _, _, ts, _ in vm.samples(f'belabox_modem_signal_percent{{{sel}}}')]
            assert signal and max(signal) < unplugged_ms + 3000, (max(signal) - unplugged_ms)
            counts = [(ts, v) for _, _, ts, v in vm.samples(f"belabox_modems{{{sel}}}") if ts > unplugged_ms]
            assert counts and all(v == 0 for ts, v in counts if ts > unplugged_ms + 3000)

            # the wrong password: named with the fix in the agent's log, no retry loop
            def refused() -> str | None:
                text = log.read_text()
                return text if "belaUI refused the password" in text else None

            text = wait_until("the refusal in the agent's log", refused, 30, agent, log)
            assert "metrics[0].sources[1].password_file" in text
            assert f"write the belaUI web UI password into {wrong}" in text
            assert "did not answer the login" not in text
            # belaUI logs every login it gets ("<password not logged>"): the page setting the
            # password (2), the stream start (1), the good source (1), the wrong one once
            assert box.log_path.read_text(errors="replace").count("<password not logged>") <= 6
        finally:
            agent.terminate()
            assert agent.wait(timeout=30) == 0
        text = log.read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        warnings = [r for r in lines if str(r.get("msg", "")).startswith("belaui: belaUI refused")]
        assert len(warnings) == 1, warnings  # warned once, not per attempt
        assert "not-the-password" not in text and PASSWORD not in text
