"""`metrics-collector status` against a running agent and a stopped one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.helpers import REPO_ROOT, cli, free_port, wait_for_port

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def test_status_running_then_stopped(tmp_path: Path) -> None:
    health = free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
device: {{id: status-box}}
storage: {{path: {tmp_path / 'agent.db'}}}
remote: {{url: "http://127.0.0.1:{free_port()}/api/v1/import", format: vm-jsonl, interval: 500ms, timeout: 500ms,
          retry: {{max_attempts: 1}}}}
health: {{listen: "127.0.0.1:{health}"}}
metrics:
  - {{name: memory, interval: 500ms}}
  - {{name: srt.packet_loss, interval: 500ms, mock: true}}
""")
    agent = subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(cfg)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", health, proc=agent)
        deadline = time.monotonic() + 60
        while True:  # the remote does not exist: uploads fail, and after 2 intervals health says so
            shown = subprocess.run([*cli("metrics-collector"), "status", "--config", str(cfg)], env=ENV,
                                   capture_output=True, text=True, timeout=60)
            if "status-box: DEGRADED" in shown.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout
        assert "status-box: DEGRADED" in out, out
        assert "last error: no answer" in out and "Connection refused" in out
        assert "not yet uploaded" in out and "oldest" in out
        assert "memory   " in out and "SRT      mock" in out
        assert len(out.splitlines()) <= 20, out
        if os.path.exists("/proc/self/io"):  # Linux: the agent's flash writes, from /proc/self/io
            assert re.search(r"flash +[0-9.]+ MB written by the agent since it started \([0-9.]+ KB/s, ~[0-9]+ MB a day\)",
                             out), out
        every = subprocess.run([*cli("metrics-collector"), "status", "--config", str(cfg), "--all"], env=ENV,
                               capture_output=True, text=True, timeout=60).stdout
        assert "memory.used_bytes" in every and "srt.packet_loss" in every and "source=mock" in every
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    stopped = subprocess.run([*cli("metrics-collector"), "status", "--config", str(cfg)], env=ENV,
                             capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 1
    out = stopped.stdout
    assert "not answering" in out and "memory   " in out
    # Stopped: the last upload and the last error come from what is on disk.
    assert "last acknowledged never" in out
    assert "last error: no answer" in out and "Connection refused" in out, out
