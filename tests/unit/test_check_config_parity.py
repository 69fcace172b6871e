"""check-config refuses what run refuses (exit 2, one line naming the key and the fix), and
warns about what run would only survive DEGRADED (issue 19). Both run as real commands."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, cli

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def write_config(tmp: Path, *, db: Path | None = None, token_file: Path | None = None,
                 metrics: str = "  - {name: cpu.temperature, interval: 5s, mock: true}",
                 health: str = '"off"', host: str = "") -> Path:
    config = tmp / "config.yaml"
    lines = [
        "device: {id: parity-box}",
        f"storage: {{path: {db or tmp / 'data' / 'metrics.db'}}}",
        "remote:",
        "  url: http://127.0.0.1:9/api/v1/import",
        *([f"  token_file: {token_file}"] if token_file else []),
        f"health: {{listen: {health}}}",
        "logging: {level: info, format: json}",
        host,
        "metrics:",
        metrics,
    ]
    config.write_text("\n".join(lines) + "\n")
    return config


def command(*args: str, read_only: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI; with ``read_only``, inside a private mount namespace where that directory is
    a read-only mount (root writes anywhere else)."""
    argv = [*cli("metrics-collector"), *args]
    if read_only is not None:
        script = f'mount -t tmpfs -o ro none "{read_only}" && exec "$@"'
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=ENV, cwd=REPO_ROOT)


def refused_alike(config: Path, key: str, words: str, read_only: Path | None = None) -> None:
    for verb in ("check-config", "run"):
        proc = command(verb, "--config", str(config), read_only=read_only)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (verb, proc.stdout, proc.stderr)
        assert len(lines) == 1 and "Traceback" not in proc.stderr, (verb, proc.stderr)
        assert f"{key}:" in lines[0] and words in lines[0] and "Fix:" in lines[0], (verb, lines[0])


def test_a_token_file_others_can_read_is_refused_by_both(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o644)
    refused_alike(write_config(tmp_path, token_file=token), "remote.token_file", "mode 0644")


def test_a_missing_or_empty_token_file_is_refused_by_both(tmp_path: Path) -> None:
    token = tmp_path / "token"
    refused_alike(write_config(tmp_path, token_file=token), "remote.token_file", "does not exist")
    token.write_text("\n")
    token.chmod(0o600)
    refused_alike(write_config(tmp_path, token_file=token), "remote.token_file", "is empty")


def test_a_storage_path_under_a_file_or_a_directory_is_refused_by_both(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    refused_alike(write_config(tmp_path, db=tmp_path / "afile" / "metrics.db"), "storage.path", "not a directory")
    (tmp_path / "adir").mkdir()
    refused_alike(write_config(tmp_path, db=tmp_path / "adir"), "storage.path", "is a directory")


def test_a_storage_directory_the_user_cannot_write_is_refused_by_both(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    read_only = None
    if os.geteuid() == 0:
        # root writes anywhere: a read-only mount over the directory is what stops it.
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
        if probe.returncode != 0:
            if os.environ.get("CI") == "true":
                pytest.fail("CI=true: this test needs `unshare -m` as root")
            pytest.skip("needs `unshare -m` (a private mount namespace) to make a read-only directory as root")
        read_only = data
    else:
        data.chmod(0o555)
    refused_alike(write_config(tmp_path, db=data / "metrics.db"), "storage.path", "is not writable",
                  read_only=read_only)


def test_no_thermal_zone_is_a_warning_in_check_config_and_an_error_with_strict(tmp_path: Path) -> None:
    empty = tmp_path / "empty-sys"
    empty.mkdir()
    config = write_config(tmp_path, metrics="  - {name: thermal, interval: 10s}",
                          host=f"host: {{proc_root: /proc, sys_root: {empty}}}")
    proc = command("check-config", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    warning = next(line for line in proc.stdout.splitlines() if line.startswith("warning:"))
    assert "metrics[0] (thermal)" in warning and "no thermal zone" in warning and "DEGRADED" in warning
    assert "(1 warning(s))" in proc.stdout
    strict = command("check-config", "--strict", "--config", str(config))
    assert strict.returncode == 1 and "warning:" in strict.stdout


def test_a_busy_health_port_is_a_warning_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        config = write_config(tmp_path, health=f'"127.0.0.1:{port}"')
        proc = command("check-config", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert f"warning: health.listen: 127.0.0.1:{port} is in use" in proc.stdout, proc.stdout


def test_a_good_config_has_no_warning_and_creates_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proc = command("check-config", "--config", str(config))
    assert proc.returncode == 0 and "warning" not in proc.stdout, proc.stdout + proc.stderr
    assert not (tmp_path / "data").exists()
