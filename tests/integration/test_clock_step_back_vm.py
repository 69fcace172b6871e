"""The real agent's wall clock stepped back 60 s while it runs, into real VictoriaMetrics.

libfaketime (Debian `faketime`) is preloaded into the agent with its offset in a control
file (FAKETIME_TIMESTAMP_FILE, re-read on every call with FAKETIME_NO_CACHE=1); writing
"-60" there steps ``time.time()`` back 60 s at once, as an NTP step would.
FAKETIME_DONT_FAKE_MONOTONIC=1 leaves ``time.monotonic()`` alone, as the kernel does (and
Python's timed waits need it). The agent's network collector reads a captured /proc tree
whose byte counters the test raises at 1000 B/s of real time.

After the step: every sample the agent collected is in VictoriaMetrics exactly once, each
counter is non-decreasing in time order there, and ``increase()`` over 10 s windows is
never negative and never a spike (at most 1.5 times the true 10 s increase).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from belabox_metrics.store.queue import SampleQueue
from tests.fault.support import ENV, audit, start_agent, stop_agent
from tests.helpers import IN_CI, free_port, require_tool
from tests.proc_tree import NET_BYTES_PER_SECOND, advance_counters, copy_tree
from tests.vm import VictoriaMetrics

DEVICE = "stepped-back"
STEP_S = 60
ROUNDS_BEFORE = 8
ROUNDS_AFTER = 20
COUNTER = "network_receive_bytes_total"
WINDOW_S = 10
ETH0 = (("interface", "eth0"),)
DEADLINE_S = 120.0
LIBFAKETIME_DIRS = ("/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime",
                    "/usr/lib/faketime")


def libfaketime() -> str:
    require_tool("faketime", "faketime")
    for directory in LIBFAKETIME_DIRS:
        path = Path(directory) / "libfaketimeMT.so.1"
        if path.exists():
            return str(path)
    message = "libfaketimeMT.so.1 not found (Debian package `libfaketime`)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


class SteadyCounters:
    """Raises the tree's counters by real elapsed time, every 50 ms, until stopped."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self.stop.wait(0.05):
            now = time.monotonic()
            advance_counters(self.root, now - last)
            last = now

    def __enter__(self) -> SteadyCounters:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def rounds_stored(db: Path) -> int:
    """Collection rounds in the database: samples of the eth0 byte counter."""
    queue = SampleQueue.open(str(db))
    try:
        return sum(1 for row in queue.all()
                   if row.sample.name == "network.receive_bytes_total" and row.sample.labels == ETH0)
    finally:
        queue.close()


def wait_for_rounds(db: Path, at_least: int, agent_alive: Callable[[], bool]) -> int:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert agent_alive(), "the agent exited"
        count = rounds_stored(db) if db.exists() else 0
        if count >= at_least:
            return count
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} rounds stored after {DEADLINE_S:.0f}s")


def vm_get(vm: VictoriaMetrics, path: str, **params: str) -> dict[str, object]:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{vm.url}{path}?{query}", timeout=30) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def export(vm: VictoriaMetrics, match: str) -> list[dict[str, list[float]]]:
    vm.flush()
    end = str(int(time.time()) + 3 * STEP_S)  # stamps may run ahead of this machine's clock
    query = urllib.parse.urlencode({"match[]": match, "start": "0", "end": end})
    with urllib.request.urlopen(f"{vm.url}/api/v1/export?{query}", timeout=30) as answer:
        return [json.loads(line) for line in answer.read().decode().splitlines() if line.strip()]


@pytest.fixture
def faketime_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    control = tmp_path / "faketime.rc"
    control.write_text("+0\n")
    env = {**ENV, "LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(control),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    yield env, control


def test_step_back_60s_every_sample_in_vm_no_negative_increase_no_spike(
        tmp_path: Path, victoria_metrics: VictoriaMetrics,
        faketime_env: tuple[dict[str, str], Path]) -> None:
    env, control = faketime_env
    root = copy_tree(tmp_path / "tree")
    advance_counters(root, 0)  # normalised once; from now on rewritten in place
    db = tmp_path / "agent.db"
    health_port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"""
device: {{id: {DEVICE}}}
storage: {{path: {db}}}
remote: {{url: {victoria_metrics.import_url}, format: vm-jsonl, interval: 1s, timeout: 5s, shutdown_grace: 10s}}
health: {{listen: "127.0.0.1:{health_port}"}}
logging: {{level: debug, format: json}}
host: {{proc_root: {root / 'proc'}, sys_root: {root / 'sys'}}}
monitoring: {{self_metrics_interval: 1s}}
metrics:
  - {{name: network, interval: 1s}}
""")
    log = tmp_path / "agent.log"
    with SteadyCounters(root):
        agent = start_agent(config, log, env=env)
        try:
            def alive() -> bool:
                return agent.poll() is None

            before = wait_for_rounds(db, ROUNDS_BEFORE, alive)
            control.write_text(f"-{STEP_S}\n")  # the step: time.time() goes back 60 s
            wait_for_rounds(db, before + ROUNDS_AFTER, alive)
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as answer:
                exposition = answer.read().decode()
        finally:
            code = stop_agent(agent)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert code == 0, log.read_text()[-3000:]

    # Nothing dropped: every sample the network collector produced is stored, and every
    # stored sample is in VictoriaMetrics exactly once.
    collected = sum(line["count"] for line in lines
                    if line["msg"] == "collected" and line.get("collector") == "network")
    queue = SampleQueue.open(str(db))
    try:
        stored_network = sum(1 for row in queue.all() if row.sample.name.startswith("network."))
    finally:
        queue.close()
    assert stored_network == collected > 0
    result = audit(victoria_metrics, db, victoria_metrics.import_url, DEVICE)
    assert result.ok and result.unsent == 0 and result.delivered == result.stored, result

    # In time order, in VictoriaMetrics: strictly increasing stamps, counters never down.
    series = export(victoria_metrics, f'{COUNTER}{{device_id="{DEVICE}"}}')
    assert series
    for line in series:
        stamps, values = line["timestamps"], line["values"]
        assert all(a < b for a, b in pairwise(stamps)), line["metric"]
        assert all(a <= b for a, b in pairwise(values)), line["metric"]

    # increase() over 10 s windows, evaluated every second across the whole run.
    eth0 = next(line for line in series if line["metric"].get("interface") == "eth0")
    first, last = eth0["timestamps"][0] / 1000, eth0["timestamps"][-1] / 1000
    answer = vm_get(victoria_metrics, "/api/v1/query_range",
                    query=f'increase({COUNTER}{{device_id="{DEVICE}",interface="eth0"}}[{WINDOW_S}s])',
                    start=f"{first + WINDOW_S:.3f}", end=f"{last:.3f}", step="1s")
    results = answer["data"]["result"]  # type: ignore[index]
    values = [float(v) for _, v in results[0]["values"]]
    assert len(values) >= ROUNDS_AFTER - WINDOW_S, values  # the windows across the step included
    true_increase = NET_BYTES_PER_SECOND * WINDOW_S
    assert min(values) >= 0
    assert max(values) <= 1.5 * true_increase, (max(values), true_increase)

    # Counted and logged once, saying what the agent does.
    assert "time_clock_steps_back_total 1" in exposition
    warnings = [line for line in lines if line["level"] == "warning" and "stepped back" in line["msg"]]
    assert len(warnings) == 1, warnings
    assert "until the clock catches up" in warnings[0]["msg"] and 59 <= warnings[0]["step_s"] <= 61
