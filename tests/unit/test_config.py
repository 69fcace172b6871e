"""Config loading: good configs parse; every bad one is one ConfigError naming key and fix,
and the CLI turns it into exit status 2 with one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from belabox_metrics.config import load_config, parse_config
from belabox_metrics.validation import ConfigError, parse_duration, parse_size
from tests.helpers import REPO_ROOT, cli

GOOD = textwrap.dedent("""
    device:
      id: belabox-001
    storage:
      path: data/metrics.db
    remote:
      url: http://127.0.0.1:8080/api/metrics
      enabled: true
    metrics:
      - name: cpu.temperature
        interval: 30s
        enabled: true
      - name: srt.packet_loss
        interval: 5s
        mock: true
""")


def bad(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value


def test_good_config_parses_with_defaults() -> None:
    settings = parse_config(GOOD, base_dir="/srv/x")
    assert settings.device.id == "belabox-001"
    assert settings.storage.path == "/srv/x/data/metrics.db"  # relative to the config file
    assert settings.remote.interval == 10.0 and settings.remote.batch_size == 10_000
    assert [(m.name, m.interval, m.mock) for m in settings.metrics] == [
        ("cpu.temperature", 30.0, False), ("srt.packet_loss", 5.0, True)]


def test_shipped_example_config_is_valid() -> None:
    settings = load_config(str(REPO_ROOT / "configs" / "config.yaml"))
    assert settings.storage.path == "/var/lib/belabox-metrics/metrics.db"
    assert [m.name for m in settings.enabled_metrics] == [
        "cpu", "memory", "disk", "network", "thermal", "system", "cpu.temperature"]


@pytest.mark.parametrize(("text", "expected"), [
    ("500ms", 0.5), ("5s", 5.0), ("1m", 60.0), ("2h", 7200.0), ("1.5s", 1.5), ("7d", 604800.0)])
def test_durations(text: str, expected: float) -> None:
    assert parse_duration(text, "k") == expected


@pytest.mark.parametrize("text", ["5", "5x", "", "-1s", "s", "1 hour", True, 5, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ConfigError, match="is not a duration"):
        parse_duration(text, "k")


def test_sizes() -> None:
    assert parse_size("64MB", "k") == 64_000_000
    assert parse_size("512KiB", "k") == 524288
    assert parse_size(1024, "k") == 1024
    with pytest.raises(ConfigError):
        parse_size("lots", "k")


@pytest.mark.parametrize(("mutation", "key", "problem"), [
    (("  enabled: true\n", "  enabled: true\n  intervall: 5s\n"), "remote.intervall", "did you mean `interval`"),
    (("device:\n", "devices: {}\ndevice:\n"), "devices", "not a known setting"),
    (("    interval: 30s\n", "    interval: 30x\n"), "metrics[0].interval", "not a duration"),
    (("    interval: 30s\n", "    interval: 30\n"), "metrics[0].interval", "not a duration"),
    (("  enabled: true\n", "  enabled: yes please\n"), "remote.enabled", "true or false"),
    (("  id: belabox-001\n", "  id: 42\n"), "device.id", "must be a string"),
    (("  id: belabox-001\n", "  id: 'bad id!'\n"), "device.id", "not allowed"),
    (("  id: belabox-001\n", ""), "device.id", "required"),
    (("http://127.0.0.1:8080", "ftp://127.0.0.1:8080"), "remote.url", "http:// or https://"),
    (("http://127.0.0.1:8080", "http://user:secret@127.0.0.1:8080"), "remote.url", "credentials"),
    (("http://127.0.0.1:8080", "http://127.0.0.1:99999"), "remote.url", "invalid port"),
    (("  - name: cpu.temperature", "  - name: cpu.temprature"), "metrics[0].name", "did you mean 'cpu.temperature'"),
    (("    mock: true\n", ""), "metrics[1].mock", "no source configured"),
    (("    enabled: true\n  - name: srt", "    enabled: true\n    colour: red\n  - name: srt"),
     "metrics[0].colour", "not a known setting"),
    (("  - name: srt.packet_loss", "  - name: cpu.temperature"), "metrics[1].name", "listed twice"),
])
def test_each_bad_config_names_key_and_fix(mutation: tuple[str, str], key: str, problem: str) -> None:
    old, new = mutation
    assert old in GOOD
    error = bad(GOOD.replace(old, new, 1))
    assert error.key == key
    assert problem in str(error)
    assert error.fix


def test_no_enabled_metric_is_an_error() -> None:
    error = bad(GOOD.replace("    enabled: true\n  - name: srt", "    enabled: false\n  - name: srt")
                .replace("    mock: true\n", "    mock: true\n    enabled: false\n"))
    assert error.key == "metrics"


def test_not_a_mapping() -> None:
    assert "must be a mapping" in str(bad("- just\n- a list\n"))
    assert bad("device: 5\n").key == "device"


def test_unreadable_yaml_reports_line() -> None:
    error = bad("device:\n  id: [unclosed\n")
    assert "not valid YAML at line" in str(error)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(str(path))


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli("metrics-collector"), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


@pytest.mark.parametrize("content", [
    "device: {id: a}\nstorage: {path: x.db}\nremote: {url: 'http://127.0.0.1:1/'}\n"
    "metrics: [{name: cpu.temperature, interval: 5x}]\n",
    "device: [unclosed\n",
    None,  # missing file
])
def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    for command in (["check-config"], ["run"], ["query"]):
        result = _run_cli(*command, "--config", str(path))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "Fix:" in lines[0]


def test_cli_check_config_ok(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD.replace("data/metrics.db", str(tmp_path / "m.db")))
    result = _run_cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout and "cpu.temperature every 30s" in result.stdout
    assert not (tmp_path / "m.db").exists()  # checking never creates the database


def test_a_key_set_twice_is_refused_naming_both_lines() -> None:
    error = bad(GOOD + "storage:\n  path: other.db\n")
    assert error.key == "storage" and "lines 4 and 16" in error.problem and "keep one" in error.fix
    nested = bad(GOOD.replace("  url: http://127.0.0.1:8080/api/metrics\n",
                              "  url: http://127.0.0.1:8080/api/metrics\n  url: http://127.0.0.1:9090/\n"))
    assert nested.key == "url" and "lines 7 and 8" in nested.problem


def test_listen_off_unquoted_is_accepted_as_documented() -> None:
    for spelling in ("off", "'off'", "false", "no"):
        settings = parse_config(GOOD + f"health:\n  listen: {spelling}\n")
        assert settings.health.listen is None, spelling


def test_listen_null_is_refused_instead_of_becoming_the_default() -> None:
    for spelling in ("~", "", "null"):
        error = bad(GOOD + f"health:\n  listen: {spelling}\n")
        assert error.key == "health.listen" and "null" in error.problem and "listen: off" in error.fix


def test_a_yaml_boolean_where_a_string_belongs_says_to_quote_it() -> None:
    error = bad(GOOD + "health:\n  listen: yes\n")
    assert error.key == "health.listen" and "boolean" in error.problem and "quote it" in error.fix
