"""The durable queue and the upload loop, with a scripted transport at the edge."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.transport import Response, TransportError
from belabox_metrics.upload.uploader import Uploader, accepted_count

URL = "http://127.0.0.1:9/api/metrics"
DEST = URL


class ScriptedTransport:
    """Answers from a script; records every request body."""

    def __init__(self, *answers: Response | Exception) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, object]] = []
        self.headers: list[Mapping[str, str]] = []

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        self.bodies.append(json.loads(body))
        self.headers.append(headers)
        answer = self.answers.pop(0) if self.answers else Response(200, {}, b'{"received": -1}')
        if isinstance(answer, Exception):
            raise answer
        if answer.body == b'{"received": -1}':  # default: accept everything sent
            sent = len(self.bodies[-1]["metrics"])  # type: ignore[arg-type]
            return Response(200, {}, json.dumps({"success": True, "received": sent}).encode())
        return answer

    def close(self) -> None:
        pass


def ok(received: int) -> Response:
    return Response(200, {}, json.dumps({"success": True, "received": received}).encode())


@pytest.fixture
def queue(tmp_path: Path) -> SampleQueue:
    return SampleQueue.open(str(tmp_path / "m.db"), "box-1")


def fill(queue: SampleQueue, n: int, start_ms: int = 1_700_000_000_000) -> list[Sample]:
    samples = [Sample("cpu.temperature", 40.0 + i, start_ms + i * 1000, make_labels(zone="soc")) for i in range(n)]
    queue.append(samples)
    return samples


def uploader(queue: SampleQueue, transport: ScriptedTransport, batch_size: int = 10) -> Uploader:
    return Uploader(queue, transport, url=URL, device_id="box-1", batch_size=batch_size,
                    clock=FakeClock(), log=logging.getLogger("test"))


def test_everything_pending_is_sent_in_order_and_acknowledged(queue: SampleQueue) -> None:
    samples = fill(queue, 25)
    transport = ScriptedTransport()
    result = uploader(queue, transport).run_cycle()
    assert result.batches == 3 and result.acknowledged == 25 and result.error is None
    sent = [m for body in transport.bodies for m in body["metrics"]]  # type: ignore[attr-defined]
    assert [m["value"] for m in sent] == [s.value for s in samples]
    assert sent[0]["labels"] == {"zone": "soc"}
    assert sent[0]["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert transport.bodies[0]["device_id"] == "box-1"
    assert queue.pending_count(DEST) == 0
    assert uploader(queue, transport).run_cycle().batches == 0  # nothing left


def test_failure_keeps_everything_and_next_cycle_retries(queue: SampleQueue) -> None:
    fill(queue, 5)
    transport = ScriptedTransport(Response(503, {}, b"busy"), TransportError("timeout"))
    up = uploader(queue, transport)
    assert up.run_cycle().error == "HTTP 503: busy"
    assert queue.pending_count(DEST) == 5
    assert "timeout" in (up.run_cycle().error or "")
    assert queue.pending_count(DEST) == 5 and up.failures_total == 2
    assert up.run_cycle().acknowledged == 5
    assert queue.pending_count(DEST) == 0
    # The same samples went out each time: nothing dropped, nothing reordered.
    assert transport.bodies[0]["metrics"] == transport.bodies[2]["metrics"]


def test_partial_acceptance_acknowledges_only_what_was_accepted(queue: SampleQueue) -> None:
    fill(queue, 10)
    transport = ScriptedTransport(ok(4))
    up = uploader(queue, transport)
    first = up.run_cycle()
    assert first.acknowledged >= 4 and up.partial_total == 1
    # The six not accepted are sent again, starting where the acceptance stopped.
    assert transport.bodies[1]["metrics"][0]["value"] == 44.0  # type: ignore[index]
    assert queue.pending_count(DEST) == 0


def test_zero_accepted_is_an_error_not_a_loop(queue: SampleQueue) -> None:
    fill(queue, 3)
    result = uploader(queue, ScriptedTransport(ok(0))).run_cycle()
    assert result.error is not None and "accepted 0 of 3" in result.error
    assert queue.pending_count(DEST) == 3


def test_204_without_body_accepts_the_whole_request(queue: SampleQueue) -> None:
    fill(queue, 3)
    assert uploader(queue, ScriptedTransport(Response(204))).run_cycle().acknowledged == 3


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"received": 3}', 3), (b'{"received": 99}', 5), (b'{"received": -2}', 0), (b'{"received": true}', 5),
    (b"", 5), (b"not json", 5), (b"[1]", 5)])
def test_accepted_count(body: bytes, expected: int) -> None:
    assert accepted_count(Response(200, {}, body), 5) == expected


def test_non_finite_values_are_never_sent_but_do_not_block(queue: SampleQueue) -> None:
    queue.append([Sample("a", float("nan"), 1), Sample("a", 1.0, 2), Sample("a", float("inf"), 3)])
    transport = ScriptedTransport()
    uploader(queue, transport).run_cycle()
    assert [m["value"] for m in transport.bodies[0]["metrics"]] == [1.0]  # type: ignore[attr-defined]
    assert queue.pending_count(DEST) == 0


def test_cursor_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    queue = SampleQueue.open(path, "box-1")
    fill(queue, 10)
    uploader(queue, ScriptedTransport(), batch_size=4).run_cycle(deadline=None)
    fill(queue, 3, start_ms=1_800_000_000_000)
    queue.close()
    reopened = SampleQueue.open(path, "box-1")
    assert reopened.pending_count(DEST) == 3
    transport = ScriptedTransport()
    uploader(reopened, transport).run_cycle()
    assert [m["timestamp"][:4] for m in transport.bodies[0]["metrics"]] == ["2027"] * 3  # type: ignore[attr-defined]


def test_deadline_stops_between_batches(queue: SampleQueue) -> None:
    fill(queue, 30)
    up = uploader(queue, ScriptedTransport(), batch_size=10)
    assert up.run_cycle(deadline=up.clock.monotonic()).batches == 0
    assert queue.pending_count(DEST) == 30


def test_ack_never_moves_the_cursor_back(queue: SampleQueue) -> None:
    fill(queue, 5)
    queue.ack(DEST, 4)
    queue.ack(DEST, 2)
    assert queue.cursor(DEST) == 4


def test_batch_id_header_is_unique_per_request(queue: SampleQueue) -> None:
    fill(queue, 20)
    transport = ScriptedTransport()
    uploader(queue, transport, batch_size=5).run_cycle()
    ids = [h["X-Batch-Id"] for h in transport.headers]
    assert len(ids) == 4 and len(set(ids)) == 4
