"""A destination that accepts the connection and then never answers (a server hung behind a
dead uplink, a proxy with nowhere to forward): one upload cycle then blocks for
attempts x remote.timeout plus the backoff. /health must stay current meanwhile: pending
grows as the collectors store, the uploader turns degraded, the request in flight shows;
and all of it recovers when the destination answers again.

Before: the queue figures were counted only between cycles, so for the whole blocked cycle
/health said ok with pending 0 (~35 s at the defaults, minutes with more retries)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.fault.proxy import Fault, FaultProxy
from tests.fault.support import agent_config, audit, start_agent, stop_agent
from tests.helpers import free_port, wait_for_port
from tests.vm import VictoriaMetrics

DEVICE = "stall-box"
TIMEOUT = 2.0
ATTEMPTS = 4
# One blocked cycle: 4 x 2 s of waiting for an answer + 1 + 2 + 2 s of backoff = 13 s.
RETRY = f"{{max_attempts: {ATTEMPTS}, backoff_base: 1s, backoff_max: 2s, jitter: 0}}"


def health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as error:  # 503 while degraded or in error
        return json.loads(error.read())  # type: ignore[no-any-return]


def uploader(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["components"]["uploader"]  # type: ignore[no-any-return]


def wait_health(port: int, ok: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc = health(port)
    while not ok(doc):
        assert time.monotonic() < deadline, f"{what} not seen in {timeout:g}s; last /health: {json.dumps(doc)}"
        time.sleep(0.2)
        doc = health(port)
    return doc


def stalled(proxy: FaultProxy) -> int:
    return sum(1 for a in proxy.arrivals() if a.outcome == "stalled")


def test_health_stays_current_while_a_cycle_is_blocked_on_a_stalled_destination(
        victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    proxy = FaultProxy("127.0.0.1", victoria_metrics.port).start()
    port = free_port()
    db = tmp_path / "agent.db"
    config = agent_config(tmp_path, proxy.url, device=DEVICE, db=db, health_port=port, remote_interval="1s",
                          timeout=f"{TIMEOUT:g}s", retry=RETRY, metrics="""
  - {name: memory, interval: 200ms}
  - {name: cpu.temperature, interval: 200ms, mock: true}""")
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        wait_for_port("127.0.0.1", port, timeout=60, proc=agent)
        wait_health(port, lambda d: d["status"] == "ok" and uploader(d)["last_success"] is not None, 60,
                    "uploads flowing")

        # The destination stops answering: every request is read and left hanging.
        proxy.add(*[Fault.stall(120)] * 200)
        deadline = time.monotonic() + 30
        while stalled(proxy) == 0:
            assert time.monotonic() < deadline, "no request reached the stalled destination"
            time.sleep(0.05)
        stalled_at = time.monotonic()

        # Inside that one blocked cycle (13 s; we look for at most 10): pending grows with
        # what the collectors store, the request in flight shows, the uploader degrades.
        readings: list[int] = []
        in_flight: list[float] = []
        degraded: dict[str, Any] | None = None
        while time.monotonic() - stalled_at < 10 and (degraded is None or len(set(readings)) < 3):
            doc = health(port)
            readings.append(int(uploader(doc)["pending"]))
            if uploader(doc).get("in_flight_seconds") is not None:
                in_flight.append(float(uploader(doc).get("in_flight_seconds")))
            if degraded is None and uploader(doc)["status"] == "degraded":
                degraded = doc
                degraded_after = time.monotonic() - stalled_at
            time.sleep(0.25)
        assert stalled(proxy) <= ATTEMPTS, "the test must look inside the first blocked cycle"
        assert len(set(readings)) >= 3 and readings == sorted(readings) and readings[-1] > 0, readings
        assert degraded is not None, f"/health never said degraded; pending {readings}"
        # 2 x remote.interval without a success while samples are pending, polled every 0.25 s.
        assert degraded_after < 8, degraded_after
        assert degraded["status"] == "degraded" and uploader(degraded)["pending"] > 0
        assert "no successful upload" in uploader(degraded)["reason"], uploader(degraded)
        assert in_flight and 0 < max(in_flight) <= 2 * TIMEOUT + 1, in_flight

        # The destination answers again: the next attempt goes through, the backlog drains.
        proxy.clear()
        recovered = wait_health(port, lambda d: d["status"] == "ok" and uploader(d)["pending"] < 100, 60,
                                "recovery")
        assert uploader(recovered)["last_error"] is None and uploader(recovered)["in_flight_seconds"] is None
    finally:
        assert stop_agent(agent) == 0
        proxy.close()
    result = audit(victoria_metrics, db, proxy.url, DEVICE)
    assert result.ok, result
