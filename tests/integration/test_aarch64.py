"""The linux-aarch64 bundle installs offline and the agent runs on an aarch64 CPython.

scripts/test-aarch64.sh does the work: Debian's arm64 python3.11 from a cached sysroot
(.cache/aarch64/) runs under qemu-user-static; the bundle built by scripts/build.sh is
installed by its own install.sh in a network namespace without network, and the installed
metrics-collector runs ~20 s under qemu with host collectors, uploading to the real
VictoriaMetrics of the `victoria_metrics` fixture, then gets SIGTERM. This test checks what the
script reports against the agent's database and VictoriaMetrics itself.

About 45 s with a warm cache; the first run on a machine also downloads ~11 MB of arm64
packages (and installs qemu-user-static when run as root).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.encode import promql_name
from tests.helpers import IN_CI, REPO_ROOT, require_tool
from tests.vm import VictoriaMetrics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SCRIPT = REPO_ROOT / "scripts" / "test-aarch64.sh"
DEVICE = "aarch64-qemu"  # the script's device.id
UNAVAILABLE = 3          # the script's exit status for a missing prerequisite

Key = tuple[str, tuple[tuple[str, str], ...], int]


def require_prerequisites() -> None:
    require_tool("apt-get", "apt")
    require_tool("dpkg", "dpkg")
    if not shutil.which("qemu-aarch64-static") and not (os.geteuid() == 0 and shutil.which("apt-get")):
        # As root the script installs qemu-user-static itself.
        require_tool("qemu-aarch64-static", "qemu-user-static")


def run_script(work: Path, report: Path, import_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--work", str(work), "--remote-url", import_url, "--seconds", "20",
         "--report", str(report)],
        capture_output=True, text=True, timeout=225, env=env, check=False)
    if proc.returncode == UNAVAILABLE:
        message = f"scripts/test-aarch64.sh: a prerequisite is unavailable:\n{proc.stderr[-2000:]}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def stored_samples(db: Path) -> dict[Key, float]:
    """What the emulated agent stored, keyed the way VictoriaMetrics exports it."""
    queue = SampleQueue.open(str(db))
    try:
        return {(promql_name(r.sample.name), tuple(sorted([("device_id", DEVICE), *r.sample.labels])), r.ts):
                float(r.sample.value) for r in queue.all() if isinstance(r.sample.value, (int, float))}
    finally:
        queue.close()


def test_aarch64_bundle_installs_offline_and_the_agent_runs_under_qemu(
        victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    require_prerequisites()
    work, report = tmp_path / "work", tmp_path / "report.json"
    proc = run_script(work, report, victoria_metrics.import_url)
    print(proc.stdout)  # the figures, for the CI log
    doc = json.loads(report.read_text())

    # The interpreter, and the agent's process, are aarch64 under qemu-user.
    assert doc["machine"] == "aarch64" and doc["platform"] == "linux-aarch64", doc
    assert doc["python"].startswith("3.11."), doc
    assert "qemu-aarch64" in doc["agent_process_exe"], doc
    # From the installed venv, with PyYAML's aarch64 C extension: the bundle's wheels were used.
    venv = work / "staging" / "opt" / "belabox-metrics" / "current"
    assert doc["package"].startswith(doc["prefix"] + "/") and Path(doc["prefix"]).resolve() == venv.resolve(), doc
    assert doc["libyaml"] is True, doc
    # The venv's base interpreter is the sysroot's arm64 python3.11.
    cfg = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    assert Path(doc["base_prefix"]) == Path(cfg["home"]).parent and (Path(cfg["home"]) / "python3.11").is_file(), cfg
    extensions = [p.name for p in (venv / "lib" / "python3.11" / "site-packages" / "yaml").glob("_yaml*.so")]
    assert extensions and all("aarch64" in name for name in extensions), extensions
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], check=False).returncode == 0:
        assert doc["install_network"].startswith("none"), doc

    # Host metrics went into the database.
    stored = stored_samples(work / "agent" / "metrics.db")
    names = {key[0] for key in stored}
    for prefix in ("cpu_", "memory_", "network_"):
        assert any(name.startswith(prefix) for name in names), (prefix, sorted(names))
    assert len(stored) == doc["samples_numeric"] > 100, doc

    # VictoriaMetrics holds every one of them, once.
    in_vm = victoria_metrics.samples(f'{{device_id="{DEVICE}"}}')
    vm_keys = [(name, labels, ts) for name, labels, ts, _ in in_vm]
    assert len(vm_keys) == len(set(vm_keys)), "a sample is stored twice in VictoriaMetrics"
    vm_values = {(name, labels, ts): value for name, labels, ts, value in in_vm}
    assert set(vm_values) == set(stored), sorted(set(stored) ^ set(vm_values))[:5]
    differ = [key for key, value in stored.items() if not math.isclose(vm_values[key], value, rel_tol=1e-9, abs_tol=1e-9)]
    assert not differ, [(key, stored[key], vm_values[key]) for key in differ[:5]]

    # The emulated agent served /health and stopped cleanly on SIGTERM.
    assert doc["health_status"] is not None, doc
    assert doc["agent_exit"] == 0, doc
    assert 0 < doc["idle_interpreter_peak_rss_kb"] < doc["peak_rss_kb"], doc
