"""Append stores each round in multi-row INSERTs (issue 21): what is stored and what append
counts as new are what one INSERT OR IGNORE per row made, at any round size (chunks of
INSERT_CHUNK rows and a remainder), with keys repeated inside a round and across rounds."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.outbox import INSERT_CHUNK
from belabox_metrics.store.queue import SampleQueue

URL = "https://vm.example/api/v1/import"
BASE_MS = 1_790_000_000_000
NAMES = ("network.receive_bytes_total", "cpu.usage_percent", "srt.state")


@st.composite
def a_round(draw: st.DrawFn) -> list[Sample]:
    size = draw(st.sampled_from([0, 1, INSERT_CHUNK - 1, INSERT_CHUNK, INSERT_CHUNK + 1,
                                 2 * INSERT_CHUNK + 7, draw(st.integers(0, 3 * INSERT_CHUNK))]))
    out = []
    for _ in range(size):
        name = draw(st.sampled_from(NAMES))
        ts = BASE_MS + draw(st.integers(0, 40)) * 1000  # few keys: repeats inside a round
        labels = make_labels(interface=f"usb{draw(st.integers(0, 9))}")
        if name == "srt.state":
            out.append(Sample(name, None, ts, labels, draw(st.sampled_from(["live", "idle"]))))
        else:
            value = draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**6, 10**6)))
            out.append(Sample(name, value, ts, labels))
    return out


def stored(queue: SampleQueue) -> dict[tuple[str, object, int], object]:
    out: dict[tuple[str, object, int], object] = {}
    for claim in queue.next_claims(URL, 100_000):
        for row in claim.rows:
            sample = row.sample
            out[(sample.name, sample.labels, sample.timestamp_ms)] = (
                sample.text if sample.value is None else sample.value)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(a_round(), min_size=1, max_size=3))
def test_append_stores_the_first_sample_of_each_key_and_counts_the_new_ones(
        tmp_path_factory: pytest.TempPathFactory, rounds: list[list[Sample]]) -> None:
    queue = SampleQueue.open(str(tmp_path_factory.mktemp("append") / "m.db"))
    model: dict[tuple[str, object, int], object] = {}
    for samples in rounds:
        new = 0
        for s in samples:
            key = (s.name, s.labels, s.timestamp_ms)
            if key not in model:
                model[key] = s.text if s.value is None else float(s.value)
                new += 1
        assert queue.append(samples) == new
    got = stored(queue)
    assert got.keys() == model.keys()
    for key, value in model.items():
        if isinstance(value, float):
            assert isinstance(got[key], float) and (got[key] == value or math.isnan(value))
        else:
            assert got[key] == value
    queue.close()
