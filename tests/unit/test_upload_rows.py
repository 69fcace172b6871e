"""Claims hand the uploader rows as stored, (ts, series_id, value) (issue 21): the request
bodies are the same bytes the Samples made, odd rows are still judged one by one, and an
acknowledgement counts the claimed range only when the store may have changed under it."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from belabox_metrics.clock import FakeClock
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.queue import Claim, SampleQueue
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.uploader import Uploader, UploadPolicy
from tests.unit.test_uploader import NOW, NOW_MS, URL, ScriptedTransport

NAMES = ("network.receive_bytes_total", "cpu.usage_percent", "thermal.zone_celsius")
VALUES = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64),
                   st.integers(-10**16, 10**16).map(float),
                   st.sampled_from([0.0, -0.0, 0.1, 1e15, -1e15, 999999999999999.0, 1e-7, 46.0]))


@st.composite
def stored_samples(draw: st.DrawFn) -> list[Sample]:
    out = []
    for _ in range(draw(st.integers(1, 60))):
        labels = make_labels(interface=f"usb{draw(st.integers(0, 4))}")
        out.append(Sample(draw(st.sampled_from(NAMES)), draw(VALUES), NOW_MS - draw(st.integers(0, 50)) * 1000, labels))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), fmt_name=st.sampled_from(["vm-jsonl", "json", "remote-write"]))
def test_a_body_from_stored_rows_is_the_body_of_their_samples(tmp_path_factory: pytest.TempPathFactory,
                                                              data: st.DataObject, fmt_name: str) -> None:
    queue = SampleQueue.open(str(tmp_path_factory.mktemp("rows") / "m.db"))
    queue.append(data.draw(stored_samples()))
    fmt = wire_format(fmt_name, "box")
    claims = queue.next_claims(URL, 10_000)
    raw = [row for claim in claims for row in claim.raw]
    # Rows out of time order within a series (late rows ahead of a lane's) too.
    shuffled = data.draw(st.permutations(raw)) if data.draw(st.booleans()) else raw
    by_key = {row.key: row.sample for claim in claims for row in claim.rows}
    samples = [by_key[(ts, sid)] for ts, sid, _ in shuffled]
    assert fmt.body_rows(shuffled, queue.catalogue, NOW_MS) == fmt.body(samples, NOW_MS)


def uploader(queue: SampleQueue, transport: ScriptedTransport) -> Uploader:
    return Uploader(queue, transport, url=URL, fmt=wire_format("vm-jsonl", "box-1"), clock=FakeClock(wall=NOW),
                    log=logging.getLogger("test"), policy=UploadPolicy(max_samples=100), rng=random.Random(1))


def test_odd_rows_in_a_claim_are_judged_one_by_one(tmp_path: Path) -> None:
    queue = SampleQueue.open(str(tmp_path / "m.db"))
    zone = make_labels(zone="soc")
    queue.append([Sample("cpu.temperature", 40.0, NOW_MS - 5000, zone),
                  Sample("cpu.temperature", 41, NOW_MS - 4000, zone),          # stored as an integer
                  Sample("cpu.temperature", float("nan"), NOW_MS - 3000, zone),
                  Sample("modem.network", None, NOW_MS - 2500, (), "4G"),      # text: kept locally
                  Sample("cpu.temperature", float("inf"), NOW_MS - 2000, zone),
                  Sample("cpu.temperature", 42.0, NOW_MS + 3 * 86_400_000, zone),  # days ahead
                  Sample("cpu.temperature", 43.0, NOW_MS - 1000, zone)])
    transport = ScriptedTransport()
    result = uploader(queue, transport).run_cycle()
    assert transport.values() == [40.0, 41.0, 43.0]
    assert result.dead == 3 and queue.pending_count(URL) == 0
    dead = sorted((str(row.sample.value), reason) for row, reason in queue.dead_letters())
    assert [value for value, _ in dead] == ["42.0", "inf", "nan"]
    assert ["finite" in reason for _, reason in dead] == [False, True, True] and "future" in dead[0][1]


def ack_counting(queue: SampleQueue, claims: list[Claim]) -> int:
    """Acknowledge ``claims``; how many COUNT statements the acknowledgement ran."""
    statements: list[str] = []
    queue.conn.set_trace_callback(lambda sql: statements.append(sql) if "COUNT(*)" in sql else None)
    try:
        queue.ack_claims(URL, claims)
    finally:
        queue.conn.set_trace_callback(None)
    return len(statements)


def test_an_acknowledgement_counts_the_claimed_range_only_when_the_store_changed(tmp_path: Path) -> None:
    queue = SampleQueue.open(str(tmp_path / "m.db"))
    other = SampleQueue.open(str(tmp_path / "m.db"))  # the collection thread's connection
    queue.append([Sample("x", float(i), NOW_MS - 60_000 + i * 1000) for i in range(5)])
    # Nothing written since the claim: the range holds exactly the claim, nothing to count.
    assert ack_counting(queue, queue.next_claims(URL, 3)) == 0
    claims = queue.next_claims(URL, 10)
    other.append([Sample("x", 9.0, NOW_MS)])  # another connection's commit: counted (nothing late)
    assert ack_counting(queue, claims) == 1 and queue.pending_count(URL) == 1
    claims = queue.next_claims(URL, 10)
    queue.append([Sample("x", 8.5, NOW_MS - 500)])  # this connection's own write, behind the claim
    assert ack_counting(queue, claims) == 1 and queue.pending_count(URL) == 1  # 8.5 is late, not skipped
    assert [r.sample.value for c in queue.next_claims(URL, 10) for r in c.rows] == [8.5]
