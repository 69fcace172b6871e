"""The receiver fuzz property of tests/unit/test_receiver_fuzz.py with many more examples,
for scripts/fuzz-receiver.sh (skipped unless BELABOX_FUZZ_EXAMPLES is set).

Same inputs and property (never a 5xx, a refused request stores nothing), but against the
real `metrics-receiver` process, so its memory can be measured apart from Hypothesis's:
its RSS may not grow by more than BELABOX_FUZZ_RSS_MIB (default 32) after the first
WARMUP examples. The number of examples run and the RSS figures are printed (and written
as JSON to BELABOX_FUZZ_REPORT if set)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fault.support import ENV, rss_kib
from tests.helpers import cli, free_port, wait_for_port
from tests.unit import test_receiver_fuzz as unit

EXAMPLES = int(os.environ.get("BELABOX_FUZZ_EXAMPLES", "0"))
RSS_BOUND_KIB = int(os.environ.get("BELABOX_FUZZ_RSS_MIB", "32")) * 1024
WARMUP = 200
property_under_test = unit.test_never_5xx_and_refusals_store_nothing.hypothesis.inner_test  # type: ignore[attr-defined]
stats: dict[str, int | None] = {"examples": 0, "rss_at_warmup_kib": None, "rss_max_kib": 0}


class ReceiverProcess(unit.ReceiverClient):
    """`metrics-receiver` on a loopback port, with the interface the unit property uses."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.log = (tmp / "receiver.log").open("wb")
        self.proc = subprocess.Popen(
            [*cli("metrics-receiver"), "--listen", f"127.0.0.1:{self.port}", "--db", str(tmp / "receiver.db"),
             "--max-body-bytes", str(unit.MAX_BODY_BYTES), "--log-level", "warning"],
            env=ENV, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.port, timeout=15, proc=self.proc)


    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def receiver_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    server = ReceiverProcess(tmp_path_factory.mktemp("fuzz-long"))
    yield server
    server.close()
    line = json.dumps({"examples_requested": EXAMPLES, **stats})
    print(f"\nfuzz-receiver: {line}")
    if os.environ.get("BELABOX_FUZZ_REPORT"):
        Path(os.environ["BELABOX_FUZZ_REPORT"]).write_text(line + "\n", encoding="utf-8")


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
def test_receiver_fuzz_long(receiver_process: ReceiverProcess, body: bytes, headers: dict[str, str],
                            method: str, path: str, gzip_it: bool) -> None:
    assert receiver_process.proc.poll() is None, "the receiver died"
    property_under_test(receiver_process, body, headers, method, path, gzip_it)
    stats["examples"] = (stats["examples"] or 0) + 1
    rss = rss_kib(receiver_process.proc.pid) or 0
    stats["rss_max_kib"] = max(stats["rss_max_kib"] or 0, rss)
    if stats["examples"] == WARMUP:
        stats["rss_at_warmup_kib"] = rss
    baseline = stats["rss_at_warmup_kib"]
    if baseline is not None:
        assert rss - baseline <= RSS_BOUND_KIB, f"receiver RSS grew by {rss - baseline} KiB after warm-up"
