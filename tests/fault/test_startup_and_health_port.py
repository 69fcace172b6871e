"""Start-up under real conditions (issue 19): a health port another process holds, an
address not on this machine, and a stop asked for while the start-up check still runs.

The agent (a real subprocess) keeps collecting and uploading when its health endpoint
cannot bind, says why naming the key and the fix, and binds once the port is free; a
SIGTERM during the salvage of a corrupt database ends the start-up with exit 0 after the
salvage is complete (before, the process died mid-copy: exit -15, samples half copied).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from belabox_metrics.model import Sample
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.store.recovery import SUSPECT_SUFFIX, mark_suspect
from tests.fault.support import ENV, agent_config, logged, start_agent, stop_agent, wait_logged
from tests.helpers import REPO_ROOT, free_port
from tests.vm import VictoriaMetrics

DEVICE = "startup-box"


def log_events(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def health_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return answer.status in (200, 503) and "components" in json.loads(answer.read())
    except (OSError, ValueError):
        return False


def in_vm(vm: VictoriaMetrics) -> int:
    return sum(1 for name, _labels, _ts, _value in vm.samples(f'{{device_id="{DEVICE}"}}') if name)


def test_a_busy_health_port_neither_stops_collection_nor_upload_and_is_bound_once_free(
        tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = int(holder.getsockname()[1])
    config = agent_config(tmp_path, victoria_metrics.import_url, device=DEVICE, db=tmp_path / "agent.db",
                          health_port=port)
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        wait_logged(log, "starting", 1, agent)
        warning = next(e for e in log_events(log) if e.get("msg", "").startswith("health endpoint not listening"))
        assert warning["level"] == "warning" and warning["key"] == "health.listen", warning
        assert f"127.0.0.1:{port} is in use" in str(warning["error"]) and "health.listen" in str(warning["fix"])
        assert "Traceback" not in log.read_text()
        # Collection and upload go on while the port is taken.
        wait_until(lambda: in_vm(victoria_metrics) > 20, 60, "samples in VictoriaMetrics")
        assert agent.poll() is None
        holder.close()
        wait_until(lambda: health_answers(port), 60, "the health endpoint bound after the port was freed")
        assert logged(log, "health endpoint listening now") == 1
        assert logged(log, "health endpoint not listening; collecting and uploading anyway, retrying every 10 s") == 1
    finally:
        holder.close()
        code = stop_agent(agent)
    assert code == 0, log.read_text()[-2000:]


def test_a_health_address_not_on_this_machine_is_a_warning_not_a_crash(
        tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    config = agent_config(tmp_path, victoria_metrics.import_url, device=DEVICE, db=tmp_path / "agent.db")
    # 192.0.2.1 (TEST-NET-1) is never an address of this machine: bind() fails, nothing is sent.
    config.write_text(config.read_text().replace('health: {listen: "off"}', 'health: {listen: "192.0.2.1:9469"}'))
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        wait_logged(log, "starting", 1, agent)
        wait_until(lambda: in_vm(victoria_metrics) > 5, 60, "samples in VictoriaMetrics")
        warning = next(e for e in log_events(log) if e.get("msg", "").startswith("health endpoint not listening"))
        assert "192.0.2.1:9469 is not an address of this machine" in str(warning["error"]), warning
        started = next(e for e in log_events(log) if e.get("msg") == "starting")
        assert str(started["health"]).startswith("not listening"), started
    finally:
        code = stop_agent(agent)
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()[-2000:]


def corrupt_backlog(db: Path, rows: int) -> None:
    queue = SampleQueue.open(str(db))
    now = int(time.time() * 1000)
    for start in range(0, rows, 100_000):
        queue.append([Sample("x", float(i), now - 3_600_000_000 + i) for i in range(start, start + 100_000)])
    queue.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    queue.close()
    pages = db.stat().st_size // 4096
    with db.open("r+b") as handle:  # torn pages in the middle of the backlog
        for page in (pages // 3, pages // 2):
            handle.seek(page * 4096 + 100)
            handle.write(os.urandom(3000))
    mark_suspect(str(db), "torn pages (test)")


def test_sigterm_during_the_start_up_salvage_ends_cleanly_after_it(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    corrupt_backlog(db, 600_000)
    config = agent_config(tmp_path, f"http://127.0.0.1:{free_port()}/api/v1/import", device=DEVICE, db=db)
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        wait_logged(log, "salvaging unsent samples from the corrupt database", 1, agent, timeout=120)
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=300)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    events = log_events(log)
    assert code == 0, log.read_text()[-2000:]
    # The salvage ran to its end (one ERROR with its count), then the start-up stopped.
    moved = [e for e in events if "moved_to" in e and e.get("level") == "error"]
    assert len(moved) == 1 and 590_000 < int(str(moved[0]["salvaged"])) < 600_000, moved
    assert any(e.get("msg") == "stop requested during start-up: exiting cleanly" for e in events)
    assert logged(log, "starting") == 0
    assert not Path(str(db) + SUSPECT_SUFFIX).exists()
    queue = SampleQueue.open(str(db))
    try:
        assert queue.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert sum(1 for r in queue.all() if r.sample.name == "x") == int(str(moved[0]["salvaged"]))
    finally:
        queue.close()
    # The next start finds nothing to do and runs.
    agent = start_agent(config, log)
    wait_logged(log, "starting", 1, agent)
    assert stop_agent(agent) == 0
    assert len([e for e in log_events(log) if "moved_to" in e and e.get("level") == "error"]) == 1


def test_dev_runs_beside_an_agent_holding_the_default_health_port(tmp_path: Path) -> None:
    """`metrics-collector dev` beside the installed service: 9469 taken, dev picks another."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 9469))  # busy already (another agent) is just as good
        holder.listen(1)
    except OSError:
        pass
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "belabox_metrics", "dev", "--data-dir", str(tmp_path / "dev"),
             "--port", str(free_port()), "--duration", "6"],
            env=ENV, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    finally:
        holder.close()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    health = next(line for line in proc.stdout.splitlines() if line.startswith("health: "))
    assert "127.0.0.1:9469/" not in health, health
    assert "Traceback" not in out and "health endpoint not listening" not in out, out[-3000:]
