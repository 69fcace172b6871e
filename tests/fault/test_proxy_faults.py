"""The real agent uploading through a fault-injecting proxy into a real VictoriaMetrics:
500/503 with growing backoff, 429 with Retry-After (seconds and HTTP-date), connection
resets, a stall past the timeout, an answer held past the timeout after VM stored the data,
a slow answer within it. Everything stored arrives exactly once, and the proxy's own log
shows the retry timing the agent promised."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault.proxy import Arrival, Fault, FaultProxy
from tests.fault.support import agent_config, audit, start_agent, stop_agent
from tests.vm import VictoriaMetrics

DEVICE = "proxy-box"
TIMEOUT = 1.0
BASE = 0.2

SCRIPT = [
    # A: four failures in a row -> backoff 0.2, 0.4, 0.8, 1.6 s (jitter 0), fifth goes through
    Fault.status_only(500), Fault.status_only(503), Fault.status_only(500), Fault.status_only(500),
    Fault.forward(),
    # B, C: 429 with Retry-After as seconds, then as an HTTP-date 3 s ahead
    Fault.retry_after_seconds(429, "2"), Fault.forward(),
    Fault.retry_after_date(429, 3.0), Fault.forward(),
    # D: two resets (the transport retries a reset once on a fresh connection by itself)
    Fault.reset(), Fault.reset(), Fault.forward(),
    # E: no answer past the agent's timeout
    Fault.stall(TIMEOUT + 1.5), Fault.forward(),
    # F: VM stores the request but the answer comes after the timeout: the agent re-sends
    Fault.slow(TIMEOUT + 0.5), Fault.forward(),
    # G: a slow answer within the timeout is a success
    Fault.slow(TIMEOUT * 0.3), Fault.forward(),
]


@pytest.fixture
def proxy(victoria_metrics: VictoriaMetrics) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy("127.0.0.1", victoria_metrics.port, SCRIPT).start()
    yield fault_proxy
    fault_proxy.close()


def next_of_batch(log: list[Arrival], index: int) -> Arrival:
    """The next request that carried the same batch (the uploader's retry of it)."""
    batch = log[index].batch_id
    return next(a for a in log[index + 1:] if a.batch_id == batch)


def first(log: list[Arrival], kind: str) -> int:
    return next(i for i, a in enumerate(log) if a.fault.kind == kind)


def test_faults_through_a_proxy_deliver_everything_once_with_honest_timing(
        victoria_metrics: VictoriaMetrics, proxy: FaultProxy, tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    config = agent_config(tmp_path, proxy.url, device=DEVICE, db=db, remote_interval="500ms",
                          timeout=f"{TIMEOUT}s",
                          retry=f"{{max_attempts: 5, backoff_base: {BASE}s, backoff_max: 5s, jitter: 0}}")
    log_path = tmp_path / "agent.log"
    agent = start_agent(config, log_path)
    try:
        deadline = time.monotonic() + 40
        while proxy.remaining() and time.monotonic() < deadline:
            assert agent.poll() is None, log_path.read_text()[-2000:]
            time.sleep(0.2)
        assert proxy.remaining() == 0, "the agent stopped sending before the script was used up"
        time.sleep(1.5)  # a few ordinary uploads after the last fault
    finally:
        assert stop_agent(agent) == 0, log_path.read_text()[-2000:]
    log = proxy.arrivals()

    # A: backoff grows (base * 2^n, jitter 0), and never fires early.
    a = [i for i, entry in enumerate(log[:6]) if entry.outcome in ("HTTP 500", "HTTP 503")]
    assert a == [0, 1, 2, 3] and len({log[i].batch_id for i in range(5)}) == 1
    gaps = [log[i + 1].monotonic - log[i].monotonic for i in range(4)]
    for n, gap in enumerate(gaps):
        expected = BASE * 2 ** n
        assert expected - 0.02 <= gap <= expected + 0.5, (n, gaps)
    assert all(gaps[i + 1] > gaps[i] for i in range(3)), gaps
    assert log[4].outcome == "HTTP 204"

    # B: Retry-After: 2 -> the retry arrives at least 2 s later.
    b = first(log, "retry_after")
    assert log[b].retry_after == "2"
    assert next_of_batch(log, b).monotonic - log[b].monotonic >= 2.0

    # C: Retry-After as an HTTP-date 3 s ahead (1 s resolution, so 2-3 s from now).
    c = first(log, "retry_after_date")
    waited = next_of_batch(log, c).monotonic - log[c].monotonic
    assert 2.0 <= waited <= 3.6, waited

    # D: the reset is retried at once on a fresh connection, then after backoff.
    d = first(log, "reset")
    assert log[d + 1].fault.kind == "reset" and log[d + 1].batch_id == log[d].batch_id
    assert log[d + 1].monotonic - log[d].monotonic < BASE
    assert next_of_batch(log, d + 1).monotonic - log[d + 1].monotonic >= BASE - 0.02

    # E: a stall costs one timeout, then backoff.
    e = first(log, "stall")
    assert next_of_batch(log, e).monotonic - log[e].monotonic >= TIMEOUT + BASE - 0.05

    # F: VM had stored the request the agent gave up on; the same bytes go again.
    f = first(log, "slow")
    resent = next_of_batch(log, f)
    assert log[f].outcome == "HTTP 204" and resent.body_bytes == log[f].body_bytes
    assert resent.monotonic - log[f].monotonic >= TIMEOUT

    # Exactly once, whatever the faults did.
    result = audit(victoria_metrics, db, proxy.url, DEVICE)
    assert result.stored > 100 and result.unsent == 0
    assert not result.missing_sent and result.duplicates == 0 and result.unknown_in_vm == 0
    assert result.delivered == result.stored
