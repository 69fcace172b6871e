"""The belaUI source over what the real belaUI.js sent (tests/fixtures/srt/belaui-real, see
its PROVENANCE), replayed with the times it was received: modems that leave, the max bitrate
at login, notifications counted per incident, and the sensors of a Jetson."""

from __future__ import annotations

import json
from typing import Any

import pytest

from belabox_metrics.collectors.srt.belaui import BelaUiState, state_samples
from belabox_metrics.model import Sample
from tests.unit.test_srt_support import FIXTURES, one, pick

REAL = FIXTURES / "belaui-real"


def capture(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (REAL / name).read_text(encoding="utf-8").splitlines() if line]


def replay(state: BelaUiState, lines: list[dict[str, Any]], *, offset: float = 0.0,
           until: float | None = None) -> float:
    """Feed the captured messages in, each at its capture time; returns the last time."""
    last = offset
    for line in lines:
        if until is not None and line["t"] > until:
            break
        last = offset + line["t"]
        if "msg" in line:
            state.apply(line["msg"], last)
    return last


def event_time(lines: list[dict[str, Any]], words: str) -> float:
    return next(line["t"] for line in lines if words in line.get("event", ""))


def samples_at(state: BelaUiState, now: float) -> list[Sample]:
    return state_samples(state, 1_700_000_000_000, now, fresh_s=5.0)


def test_an_unplugged_modem_ends_its_series_and_the_modem_count_drops() -> None:
    lines = capture("modem_removed.jsonl")
    unplugged = event_time(lines, "modem unplugged")
    state = BelaUiState()
    now = replay(state, lines, until=unplugged)
    before = samples_at(state, now)
    assert one(before, "belabox.modems") == 1
    assert one(before, "belabox.modem_signal_percent", modem="0") == 71
    assert one(before, "belabox.modem_roaming", modem="0") == 1
    assert {s.text for s in pick(before, "belabox.modem_network", modem="0")} == {"RealsrcNet"}
    # belaUI's next status.modems (about a second later) simply lacks modem 0
    first_after = next(line["t"] for line in lines
                       if line["t"] > unplugged and "status" in line.get("msg", {}))
    now = replay(state, [line for line in lines if unplugged < line["t"] <= first_after])
    assert first_after - unplugged < 2.0
    after = samples_at(state, now)
    assert one(after, "belabox.modems") == 0
    for metric in ("belabox.modem_signal_percent", "belabox.modem_roaming", "belabox.modem_network",
                   "belabox.modem_technology", "belabox.modem_connection"):
        assert pick(after, metric) == [], metric
    # the uplink interface itself is still listed by netif (its counters are the OS's)
    assert pick(after, "belabox.modem_throughput_bytes_per_second", interface="wwan0")


def test_a_modem_that_appears_mid_session_is_described_in_full_then_updated() -> None:
    lines = capture("persistent_error.jsonl")
    state = BelaUiState()
    now = replay(state, lines, until=0.01)  # the login burst: no modem at that moment
    assert one(samples_at(state, now), "belabox.modems") == 0
    now = replay(state, lines, until=3.0)
    got = samples_at(state, now)
    assert one(got, "belabox.modems") == 1
    assert one(got, "belabox.modem_signal_percent", modem="0") == 71


def test_the_max_bitrate_arrives_with_config_at_every_login_and_follows_other_clients() -> None:
    login = capture("relogin.jsonl")
    state = BelaUiState()
    now = replay(state, login, until=0.01)
    assert one(samples_at(state, now), "belabox.max_bitrate_bits_per_second") == 4_200_000

    stream = capture("persistent_error.jsonl")
    state = BelaUiState()
    changed = event_time(stream, "sets max_br 3000")
    now = replay(state, stream, until=changed)
    assert one(samples_at(state, now), "belabox.max_bitrate_bits_per_second") == 4_200_000
    now = replay(state, [line for line in stream if line["t"] > changed])
    assert one(samples_at(state, now), "belabox.max_bitrate_bits_per_second") == 3_000_000

    # a box that never streamed has no max_br in its config: no made-up value
    fresh = BelaUiState()
    now = replay(fresh, capture("first_login.jsonl"))
    assert pick(samples_at(fresh, now), "belabox.max_bitrate_bits_per_second") == []


def test_a_persistent_error_is_one_incident_across_repeats_and_logins() -> None:
    stream = capture("persistent_error.jsonl")
    shows = [line for line in stream
             if any(n.get("name") == "srtla" for n in line.get("msg", {}).get("notification", {}).get("show", []))]
    assert len(shows) >= 5  # belaUI re-sent it about once a second
    state = BelaUiState()
    now = replay(state, stream)
    got = samples_at(state, now)
    assert one(got, "belabox.error_notifications_total", name="srtla") == 1
    assert [n[2] for n in state.new_notifications] == ["Failed to connect to the SRTLA server. Retrying..."]

    # the agent reconnects while it is still shown: belaUI re-sends it at login, same incident
    login = capture("relogin.jsonl")
    state.reset_session()
    last_show = max(line["t"] for line in shows)
    replay(state, login, offset=last_show + 1.0)
    assert one(samples_at(state, now), "belabox.error_notifications_total", name="srtla") == 1

    # long after it ran out (duration 5 s), the same error again is a new incident
    replay(state, login, offset=last_show + 120.0)
    assert one(samples_at(state, now), "belabox.error_notifications_total", name="srtla") == 2


def test_a_wrong_password_is_told_by_the_auth_notification() -> None:
    lines = capture("wrong_password.jsonl")
    assert not any("auth" in line.get("msg", {}) for line in lines)  # no auth answer at all
    state = BelaUiState()
    replay(state, lines)
    assert state.password_refused
    # a one-off error notification (not persistent) is an incident each time
    assert state.error_notifications == {"auth": 1}
    replay(state, lines, offset=0.5)
    assert state.error_notifications == {"auth": 2}


def test_jetson_power_sensors_and_rk3588_temperature() -> None:
    state = BelaUiState()
    now = replay(state, capture("jetson_sensors.jsonl"))
    got = samples_at(state, now)
    assert one(got, "belabox.soc_temperature_celsius") == pytest.approx(48.5)
    assert one(got, "belabox.soc_voltage_volts") == pytest.approx(5.012)
    assert one(got, "belabox.soc_current_amperes") == pytest.approx(1.236)

    state = BelaUiState()
    now = replay(state, capture("first_login.jsonl"))
    got = samples_at(state, now)
    assert one(got, "belabox.soc_temperature_celsius") == pytest.approx(52.7)
    assert pick(got, "belabox.soc_voltage_volts") == []
    # netif tp is bytes sent in the last second: the stub sends 250,000 B/s
    assert one(got, "belabox.modem_throughput_bytes_per_second", interface="wwan0") == pytest.approx(
        250_000, rel=0.02)
    assert state.unknown_types <= {"pipelines", "acodecs"}
