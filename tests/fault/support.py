"""Shared by the fault tests and scripts/soak.py: the agent as a real subprocess, and the
audit that compares what its database says was sent with what VictoriaMetrics holds.

The audit is by sample key (metric, labels with device_id, timestamp): VictoriaMetrics
with ``-dedup.minScrapeInterval=1ms`` keeps one row per key, so a key seen twice in its
export is a real duplicate, and a key the database counts as sent but VM lacks is a loss.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from belabox_metrics.logs import redact_url
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.encode import promql_name
from tests.helpers import REPO_ROOT, cli
from tests.vm import VictoriaMetrics

# The repository first (tests.* for helpers), then whatever the caller set (a checkout's src/).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}
Key = tuple[str, tuple[tuple[str, str], ...], int]
# The agent's self-metrics (selfmetrics.py families), as VM names them: they are stored and
# sent like any sample but are not counted in collector_metrics_collected_total.
SELF_PREFIXES = ("collector_", "storage_", "uploader_", "time_skew")


def agent_config(tmp: Path, url: str, *, device: str, db: Path, health_port: int | None = None,
                 remote_interval: str = "1s", timeout: str = "2s", batch: int = 2000,
                 retry: str = "{max_attempts: 3, backoff_base: 200ms, backoff_max: 2s, jitter: 0}",
                 metrics: str | None = None, extra: str = "") -> Path:
    """A config file for the agent under test: short intervals, vm-jsonl, JSON logs."""
    if metrics is None:
        metrics = """
  - {name: cpu.temperature, interval: 200ms, mock: true}
  - {name: srt.packet_loss, interval: 100ms, mock: true}"""
    health = f'"127.0.0.1:{health_port}"' if health_port else '"off"'
    config = tmp / "config.yaml"
    config.write_text(f"""
device: {{id: {device}}}
storage: {{path: {db}}}
remote:
  url: {url}
  format: vm-jsonl
  interval: {remote_interval}
  timeout: {timeout}
  batch_size: {batch}
  shutdown_grace: 10s
  retry: {retry}
health: {{listen: {health}}}
logging: {{level: info, format: json}}
{extra}
metrics:{metrics}
""")
    return config


def start_agent(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)],
                                env=ENV if env is None else env, stdout=out, stderr=subprocess.STDOUT)


def logged(log: Path, message: str) -> int:
    """How many JSON log lines of the agent carry ``message``."""
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                if json.loads(line).get("msg") == message:
                    count += 1
            except ValueError:
                continue  # a line cut mid-write
    return count


def wait_logged(log: Path, message: str, count: int, agent: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until the agent has logged ``message`` ``count`` times in all (not a sleep: a
    busy machine may take long to start it)."""
    deadline = time.monotonic() + timeout
    while logged(log, message) < count:
        if agent.poll() is not None:
            raise AssertionError(f"agent exited with {agent.returncode} before {message!r} x{count}: "
                                 + log.read_text(errors="replace")[-2000:])
        if time.monotonic() > deadline:
            raise AssertionError(f"no {message!r} x{count} in {timeout:g} s: " + log.read_text(errors="replace")[-2000:])
        time.sleep(0.05)


def wait_stored(db: Path, name: str, timeout: float = 60.0) -> None:
    """Wait until the database holds a sample named ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            queue = SampleQueue.open(str(db))
            try:
                if queue.recent(name, 1):
                    return
            finally:
                queue.close()
        except sqlite3.Error:  # the agent may hold a write lock for a moment
            pass
        time.sleep(0.1)
    raise AssertionError(f"no {name} sample stored in {timeout:g} s")


def stop_agent(agent: subprocess.Popen[bytes], timeout: float = 40.0) -> int:
    """SIGTERM (final upload within shutdown_grace), then the exit code; SIGKILL if it hangs."""
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
    try:
        return agent.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
        raise


def pending(db: Path, url: str) -> int:
    queue = SampleQueue.open(str(db))
    try:
        return queue.pending_count(redact_url(url))
    finally:
        queue.close()


def wait_drained(db: Path, url: str, timeout: float) -> int:
    """Poll until nothing is pending for ``url`` (bounded); returns what is left."""
    deadline = time.monotonic() + timeout
    left = pending(db, url)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = pending(db, url)
    return left


def local_keys(queue: SampleQueue, device: str, destination: str) -> tuple[set[Key], set[Key]]:
    """(sent, unsent) keys of the numeric, finite samples in the database; text samples
    are kept locally by design and non-finite ones go to dead letters, so neither is
    expected in VM."""
    sent: set[Key] = set()
    unsent: set[Key] = set()
    for row, is_sent in queue.recent(None, 1 << 40, destination):
        value = row.sample.value
        if value is None or not math.isfinite(value):
            continue
        key = (promql_name(row.sample.name), tuple(sorted([("device_id", device), *row.sample.labels])), row.ts)
        (sent if is_sent else unsent).add(key)
    return sent, unsent


def vm_counts(vm: VictoriaMetrics, device: str) -> Counter[Key]:
    return Counter((name, labels, ts) for name, labels, ts, _ in vm.samples(f'{{device_id="{device}"}}'))


@dataclass
class Audit:
    stored: int                    # numeric finite samples in the database
    sent: int                      # of those, counted as sent by the database
    delivered: int                 # stored samples present in VM
    missing_sent: list[Key] = field(default_factory=list)   # counted as sent, not in VM: a loss
    unsent: int = 0                # still pending in the database
    duplicates: int = 0            # keys VM holds more than once
    unknown_in_vm: int = 0         # keys in VM the database never stored
    dead_letters: int = 0
    stored_self: int = 0           # of ``stored``, the agent's own metrics (not collectors')

    @property
    def ok(self) -> bool:
        return not self.missing_sent and not self.duplicates and not self.unknown_in_vm


def audit(vm: VictoriaMetrics, db: Path, url: str, device: str, settle: float = 15.0) -> Audit:
    """Compare the database with VM. VM makes the newest rows searchable a moment after a
    flush, so a shortfall is re-checked for up to ``settle`` seconds before it counts."""
    queue = SampleQueue.open(str(db))
    try:
        sent, unsent = local_keys(queue, device, redact_url(url))
        dead = len(queue.dead_letters())
    finally:
        queue.close()
    deadline = time.monotonic() + settle
    while True:
        counts = vm_counts(vm, device)
        if sent <= counts.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    stored = sent | unsent
    return Audit(stored=len(stored), stored_self=sum(1 for k in stored if k[0].startswith(SELF_PREFIXES)), sent=len(sent), delivered=len(stored & counts.keys()),
                 missing_sent=sorted(sent - counts.keys()), unsent=len(unsent),
                 duplicates=sum(1 for c in counts.values() if c > 1),
                 unknown_in_vm=len(counts.keys() - stored), dead_letters=dead)


def get_json(url: str, timeout: float = 5.0) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def rss_kib(pid: int) -> int | None:
    """VmRSS of a live process, from /proc/<pid>/status."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
