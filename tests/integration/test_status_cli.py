"""`metrics-collector status` against a running agent and a stopped one."""

from __future__ import annotations

import os
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
        time.sleep(2.5)
        shown = subprocess.run([*cli("metrics-collector"), "status", "--config", str(cfg)], env=ENV,
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout
        assert "agent:    DEGRADED" in out  # the remote does not exist: uploads fail
        assert "last error: no answer" in out and "Connection refused" in out
        assert "samples not yet uploaded" in out and "oldest from" in out
        assert "memory.used_bytes" in out and "srt.packet_loss" in out and "source=mock" in out
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    stopped = subprocess.run([*cli("metrics-collector"), "status", "--config", str(cfg)], env=ENV,
                             capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 1
    assert "not answering" in stopped.stdout and "memory.used_bytes" in stopped.stdout
