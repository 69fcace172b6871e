"""The CI soak: scripts/soak.py for exactly 2 minutes (the agent with ~100 samples/s against
a real VictoriaMetrics restarted every 20 s for 5 s), then its audit: nothing lost, nothing
duplicated, RSS flat after warm-up. The 30-minute figures are in docs/benchmarks.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, require_tool
from tests.vm import vm_available

MINUTES = 2


@pytest.mark.slow
@pytest.mark.timeout(MINUTES * 60 + 150)
def test_two_minute_soak_loses_nothing_duplicates_nothing_and_stays_flat(tmp_path: Path) -> None:
    if vm_available() is None:
        require_tool("victoria-metrics", "victoria-metrics")
    report_path = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "soak.py"), str(MINUTES), "--report", str(report_path),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=MINUTES * 60 + 120)
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["problems"] == []
    assert report["vm_restarts"] >= 4
    assert report["missing"] == 0 and report["duplicates"] == 0 and report["unsent_after_stop"] == 0
    assert report["delivered"] == report["stored"] > 5_000
    rss = report["rss_kib"]
    assert rss["growth_after_warmup"] <= rss["bound"]
    assert len(report["rss_series"]) >= MINUTES * 60 // 5 - 2


def test_soak_script_needs_the_minutes() -> None:
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "soak.sh")], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and "usage: scripts/soak.sh MINUTES" in done.stderr
