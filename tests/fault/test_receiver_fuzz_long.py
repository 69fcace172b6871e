"""The receiver fuzz property of tests/unit/test_receiver_fuzz.py with many more examples,
for scripts/fuzz-receiver.sh (skipped unless BELABOX_FUZZ_EXAMPLES is set). Same inputs,
same property (never a 5xx, a refused request stores nothing), plus: the receiver process's
RSS stays within BELABOX_FUZZ_RSS_MIB (default 64 MiB) of where it started, and the number
of examples actually run is printed (and written to BELABOX_FUZZ_REPORT if set)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fault.support import rss_kib
from tests.unit import test_receiver_fuzz as unit

EXAMPLES = int(os.environ.get("BELABOX_FUZZ_EXAMPLES", "0"))
RSS_BOUND_KIB = int(os.environ.get("BELABOX_FUZZ_RSS_MIB", "64")) * 1024
receiver = unit.receiver  # the in-process receiver fixture, shared by this module's tests
property_under_test = unit.test_never_5xx_and_refusals_store_nothing.hypothesis.inner_test  # type: ignore[attr-defined]
stats = {"examples": 0, "rss_start_kib": 0, "rss_max_kib": 0}


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    stats["rss_start_kib"] = stats["rss_max_kib"] = rss_kib(os.getpid()) or 0
    yield
    line = json.dumps({"examples_requested": EXAMPLES, **stats})
    print(f"\nfuzz-receiver: {line}")
    if os.environ.get("BELABOX_FUZZ_REPORT"):
        with open(os.environ["BELABOX_FUZZ_REPORT"], "w", encoding="utf-8") as handle:
            handle.write(line + "\n")


@pytest.mark.skipif(EXAMPLES <= 0, reason="long fuzzing: run scripts/fuzz-receiver.sh N")
@settings(max_examples=max(EXAMPLES, 1), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    body=unit.bodies,
    headers=unit.header_sets,
    method=st.sampled_from(["POST"] * 12 + ["PUT", "GET", "DELETE"]),
    path=st.sampled_from(["/api/metrics"] * 12 + ["/", "/api/metrics/", "/health"]),
    gzip_it=st.booleans(),
)
def test_receiver_fuzz_long(receiver: unit.InProcessReceiver, body: bytes, headers: dict[str, str],
                            method: str, path: str, gzip_it: bool) -> None:
    property_under_test(receiver, body, headers, method, path, gzip_it)
    stats["examples"] += 1
    rss = rss_kib(os.getpid()) or 0
    stats["rss_max_kib"] = max(stats["rss_max_kib"], rss)
    assert rss - stats["rss_start_kib"] <= RSS_BOUND_KIB, f"RSS grew by {rss - stats['rss_start_kib']} KiB"
