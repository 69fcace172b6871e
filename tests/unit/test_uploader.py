"""The upload loop against a scripted transport (the edge) and a real SQLite queue."""

from __future__ import annotations

import gzip
import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.backoff import backoff_delay, parse_retry_after
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import Response, TransportError
from belabox_metrics.upload.uploader import Uploader, UploadPolicy, accepted_count, check_sample

URL = "http://127.0.0.1:9/api/v1/import"
NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)
# Real VictoriaMetrics' answer to a request holding one line too long (captured from the
# Debian victoria-metrics with -import.maxLineLen=200). Its /api/v1/import skips an
# unparsable line and answers 204: this is the one per-sample refusal it makes.
VM_REFUSAL = (b'remoteAddr: "127.0.0.1:41202"; requestURI: /api/v1/import; '
              b"cannot read vmimport data: too long line: more than 200 bytes\n")


class ScriptedTransport:
    """Answers from a script (then 204s); decodes and records every request."""

    def __init__(self, *answers: Response | Exception, refuse: set[float] | None = None) -> None:
        self.answers = list(answers)
        self.refuse = refuse or set()  # any request holding one of these values gets a 400
        self.requests: list[list[dict[str, object]]] = []
        self.headers: list[Mapping[str, str]] = []
        self.sizes: list[int] = []

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        assert headers["Content-Encoding"] == "gzip"
        lines = [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
        self.requests.append(lines)
        self.headers.append(headers)
        self.sizes.append(len(body))
        if any(v in self.refuse for line in lines for v in line["values"]):  # type: ignore[attr-defined]
            return Response(400, {}, getattr(self, "refuse_body", VM_REFUSAL))
        answer = self.answers.pop(0) if self.answers else Response(204)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        pass

    def values(self, index: int | None = None) -> list[float]:
        chosen = self.requests if index is None else [self.requests[index]]
        out: list[tuple[int, float]] = []
        for lines in chosen:
            for line in lines:
                out.extend(zip(line["timestamps"], line["values"], strict=True))  # type: ignore[call-overload]
        return [v for _, v in out]


@pytest.fixture
def queue(tmp_path: Path) -> SampleQueue:
    return SampleQueue.open(str(tmp_path / "m.db"))


def fill(queue: SampleQueue, n: int, start_ms: int = NOW_MS - 3_600_000, series: int = 1) -> list[Sample]:
    samples = [Sample("cpu.temperature", float(i), start_ms + i * 1000, make_labels(zone=f"z{i % series}"))
               for i in range(n)]
    queue.append(samples)
    return samples


def make(queue: SampleQueue, transport: ScriptedTransport, clock: FakeClock | None = None,
         **policy: object) -> Uploader:
    return Uploader(queue, transport, url=URL, fmt=wire_format("vm-jsonl", "box-1"),
                    clock=clock or FakeClock(wall=NOW), log=logging.getLogger("test"),
                    policy=UploadPolicy(**{"max_samples": 10, "backoff_base": 0.5, "backoff_max": 4.0,
                                           **policy}),  # type: ignore[arg-type]
                    rng=random.Random(1))


def pending(queue: SampleQueue) -> int:
    return queue.pending_count(URL)


# -- delivery and ordering ----------------------------------------------------------------
def test_everything_arrives_once_in_order_and_is_acknowledged(queue: SampleQueue) -> None:
    fill(queue, 25)
    transport = ScriptedTransport()
    result = make(queue, transport, newest_first=False).run_cycle()
    assert result.acknowledged == 25 and result.error is None and pending(queue) == 0
    assert transport.values() == [float(i) for i in range(25)]
    line = transport.requests[0][0]
    assert line["metric"] == {"__name__": "cpu_temperature_celsius", "device_id": "box-1", "zone": "z0"}
    assert line["timestamps"] == sorted(line["timestamps"])  # type: ignore[type-var]
    assert make(queue, transport).run_cycle().batches == 0


def test_one_line_per_series_per_request(queue: SampleQueue) -> None:
    fill(queue, 9, series=3)
    transport = ScriptedTransport()
    make(queue, transport).run_cycle()
    assert len(transport.requests) == 1
    assert sorted(line["metric"]["zone"] for line in transport.requests[0]) == ["z0", "z1", "z2"]  # type: ignore[index]
    assert all(len(line["values"]) == 3 for line in transport.requests[0])  # type: ignore[arg-type]


def test_after_an_outage_newest_go_first_then_backlog_oldest_first(queue: SampleQueue) -> None:
    fill(queue, 35)
    transport = ScriptedTransport()
    make(queue, transport, newest_first=True).run_cycle()
    firsts = [transport.values(i) for i in range(len(transport.requests))]
    assert firsts[0] == [float(i) for i in range(25, 35)]          # the newest chunk
    assert firsts[1] == [float(i) for i in range(0, 10)]           # then the backlog, oldest first
    assert sorted(transport.values()) == [float(i) for i in range(35)]  # each once
    assert pending(queue) == 0
    # Marks merged: new samples continue after the newest, nothing is resent.
    fill(queue, 2, start_ms=NOW_MS)
    transport2 = ScriptedTransport()
    make(queue, transport2, newest_first=True).run_cycle()
    assert transport2.values() == [0.0, 1.0] and pending(queue) == 0


def test_fresh_samples_collected_during_a_drain_go_before_the_rest_of_the_backlog(queue: SampleQueue) -> None:
    fill(queue, 40)
    transport = ScriptedTransport(Response(204), Response(204), Response(503, {}, b""))
    up = make(queue, transport, max_attempts=1, newest_first=True)
    up.run_cycle()  # newest 30..39, backlog 0..9, then a failure
    queue.append([Sample("cpu.temperature", 1000.0, NOW_MS, make_labels(zone="z0"))])
    transport.answers = []
    up.run_cycle()
    assert transport.values(3) == [1000.0]  # the new sample jumps the remaining backlog
    assert sorted(transport.values()) == sorted([float(i) for i in range(40)] + [10.0, 11.0, 12.0, 13.0, 14.0,
                                                                                15.0, 16.0, 17.0, 18.0, 19.0, 1000.0])
    assert pending(queue) == 0


def test_late_sample_below_the_mark_is_still_sent(queue: SampleQueue) -> None:
    fill(queue, 5)
    transport = ScriptedTransport()
    up = make(queue, transport)
    up.run_cycle()
    # The wall clock stepped back: a sample older than everything acknowledged.
    queue.append([Sample("cpu.temperature", 77.0, NOW_MS - 7_200_000, make_labels(zone="z0"))])
    assert pending(queue) == 1
    up.run_cycle()
    assert transport.values(-1) == [77.0] and pending(queue) == 0


def test_rows_committed_behind_a_claim_become_late_not_lost(queue: SampleQueue, tmp_path: Path) -> None:
    fill(queue, 5)
    claim = queue.next_batch(URL, 10)
    assert claim is not None
    # Another connection (the collection thread) commits an older sample after the claim.
    other = SampleQueue.open(str(tmp_path / "m.db"))
    other.append([Sample("cpu.temperature", 55.0, NOW_MS - 3_600_000 + 1500, make_labels(zone="z0"))])
    queue.ack(URL, claim)
    assert pending(queue) == 1
    transport = ScriptedTransport()
    make(queue, transport).run_cycle()
    assert transport.values() == [55.0]


def test_reinserted_sample_is_a_no_op(queue: SampleQueue) -> None:
    samples = fill(queue, 3)
    assert queue.append(samples) == 0
    assert queue.count() == 3


def test_text_samples_are_kept_locally_never_sent(queue: SampleQueue) -> None:
    queue.append([Sample("modem.network", None, NOW_MS, make_labels(modem="usb0"), "4G"),
                  Sample("cpu.temperature", 50.0, NOW_MS)])
    transport = ScriptedTransport()
    make(queue, transport).run_cycle()
    assert transport.values() == [50.0] and pending(queue) == 0
    assert [r.sample.text for r in queue.all() if r.sample.text] == ["4G"]
    assert queue.dead_letters() == []


# -- failures, retries, backoff -----------------------------------------------------------
def test_failure_keeps_everything_and_next_cycle_retries(queue: SampleQueue) -> None:
    fill(queue, 5)
    transport = ScriptedTransport(*[TransportError("timeout")] * 3)
    up = make(queue, transport, max_attempts=3)
    result = up.run_cycle()
    assert "gave up after 3 attempts" in (result.error or "") and pending(queue) == 5
    assert up.run_cycle().acknowledged == 5 and pending(queue) == 0
    assert transport.values() == [float(i) for i in range(5)] * 4  # the same chunk each time


def test_retries_back_off_exponentially_with_jitter(queue: SampleQueue) -> None:
    fill(queue, 1)
    clock = FakeClock(wall=NOW)
    transport = ScriptedTransport(*[Response(503, {}, b"")] * 4)
    make(queue, transport, clock, max_attempts=5, jitter=0.2).run_cycle()
    assert len(clock.waits) == 4
    for attempt, waited in enumerate(clock.waits, start=1):
        nominal = min(4.0, 0.5 * 2 ** (attempt - 1))
        assert nominal * 0.8 <= waited <= nominal * 1.2
    assert pending(queue) == 0


@pytest.mark.parametrize("header", ["7", "Tue, 14 Nov 2023 22:13:27 GMT"])
def test_retry_after_is_honoured_in_both_forms(queue: SampleQueue, header: str) -> None:
    fill(queue, 1)
    clock = FakeClock(wall=NOW)  # 2023-11-14T22:13:20Z: the HTTP-date is 7 s later
    transport = ScriptedTransport(Response(429, {"Retry-After": header}, b"slow down"))
    make(queue, transport, clock).run_cycle()
    assert clock.waits == [pytest.approx(7.0)]
    assert pending(queue) == 0


def test_auth_refusal_keeps_data_and_says_so(queue: SampleQueue) -> None:
    fill(queue, 3)
    result = make(queue, ScriptedTransport(Response(401, {}, b"Unauthorized"))).run_cycle()
    assert "authentication refused" in (result.error or "") and pending(queue) == 3
    assert queue.dead_letters() == []


# -- poison, validation, size cap -----------------------------------------------------------
def test_poison_sample_is_isolated_by_bisection_and_dead_lettered(queue: SampleQueue) -> None:
    fill(queue, 8)
    transport = ScriptedTransport(refuse={5.0})
    result = make(queue, transport).run_cycle()
    assert result.dead == 1 and pending(queue) == 0
    dead = queue.dead_letters()
    assert [(r.sample.value, reason.split(":")[0]) for r, reason in dead] == [(5.0, "HTTP 400")]
    delivered = [v for v in transport.values() if v != 5.0]
    assert sorted(set(delivered)) == [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0]


def test_invalid_samples_are_held_back_with_reason_never_sent(queue: SampleQueue) -> None:
    queue.append([
        Sample("a", float("nan"), NOW_MS), Sample("a", 1.0, NOW_MS + 1),
        Sample("b", 2.0, NOW_MS - 40 * 86_400_000),      # older than the retention window
        Sample("c", 3.0, NOW_MS + 3 * 86_400_000),        # days in the future: clock not synced
    ])
    transport = ScriptedTransport()
    result = make(queue, transport).run_cycle()
    assert transport.values() == [1.0] and result.dead == 3 and pending(queue) == 0
    reasons = sorted(reason for _, reason in queue.dead_letters())
    assert any("not a finite number" in r for r in reasons)
    assert any("older than" in r for r in reasons) and any("future" in r for r in reasons)


def test_requests_are_capped_in_compressed_bytes_by_bisection(queue: SampleQueue) -> None:
    # Random values compress badly: 400 samples are well over a 2 KiB cap.
    rng = random.Random(7)
    queue.append([Sample("x", rng.random(), NOW_MS - 10_000 + i) for i in range(400)])
    transport = ScriptedTransport()
    make(queue, transport, max_samples=1000, max_bytes=2048).run_cycle()
    assert len(transport.requests) > 1 and max(transport.sizes) <= 2048
    assert len(transport.values()) == 400 and pending(queue) == 0


def test_partial_acceptance_acknowledges_only_what_was_accepted(queue: SampleQueue) -> None:
    fill(queue, 10)
    up = Uploader(queue, ScriptedTransport(Response(200, {}, b'{"received": 4}')), url=URL,
                  fmt=wire_format("vm-jsonl", "b"), clock=FakeClock(wall=NOW), log=logging.getLogger("t"),
                  policy=UploadPolicy(max_samples=10, max_batches_per_cycle=1))
    up.run_cycle()
    assert pending(queue) == 6 and up.partial_total == 1


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"received": 3}', 3), (b'{"received": 99}', 5), (b'{"received": -2}', 0), (b'{"received": true}', 5),
    (b"", 5), (b"not json", 5), (b"[1]", 5)])
def test_accepted_count(body: bytes, expected: int) -> None:
    assert accepted_count(Response(200, {}, body), 5) == expected


def test_batch_id_header_is_unique_per_request(queue: SampleQueue) -> None:
    fill(queue, 30)
    transport = ScriptedTransport()
    make(queue, transport).run_cycle()
    ids = [h["X-Batch-Id"] for h in transport.headers]
    assert len(ids) == 3 and len(set(ids)) == 3


def test_deadline_stops_between_batches(queue: SampleQueue) -> None:
    fill(queue, 30)
    up = make(queue, ScriptedTransport())
    assert up.run_cycle(deadline=up.clock.monotonic()).batches == 0
    assert pending(queue) == 30


# -- pure policies -------------------------------------------------------------------------
def test_backoff_values_and_jitter_range() -> None:
    rng = random.Random(3)
    for attempt, nominal in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 60.0)]:
        delays = [backoff_delay(attempt, base=1.0, maximum=60.0, jitter=0.2, rng=rng) for _ in range(200)]
        assert min(delays) >= nominal * 0.8 and max(delays) <= nominal * 1.2
        assert max(delays) - min(delays) > nominal * 0.2  # really jittered
    assert backoff_delay(3, base=1.0, maximum=60.0, jitter=0.0, rng=rng) == 4.0


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0), ("0", 0.0), ("Tue, 14 Nov 2023 22:14:20 GMT", 60.0),
    ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0), ("soon", None), ("", None), (None, None), ("99999", 3600.0)])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_check_sample() -> None:
    policy = UploadPolicy()
    assert check_sample(Sample("a", 1.0, NOW_MS), NOW_MS, policy) is None
    assert "finite" in (check_sample(Sample("a", float("inf"), NOW_MS), NOW_MS, policy) or "")


# -- persistence, retention, cap -------------------------------------------------------------
def test_progress_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    queue = SampleQueue.open(path)
    fill(queue, 10)
    make(queue, ScriptedTransport(), max_samples=4, newest_first=False, max_batches_per_cycle=2).run_cycle()
    queue.close()
    reopened = SampleQueue.open(path)
    assert reopened.pending_count(URL) == 2
    transport = ScriptedTransport()
    make(reopened, transport).run_cycle()
    assert transport.values() == [8.0, 9.0]


def test_retention_deletes_only_acknowledged_old_samples(queue: SampleQueue) -> None:
    fill(queue, 10, start_ms=NOW_MS - 10_000)
    make(queue, ScriptedTransport(), max_samples=6, newest_first=False, max_batches_per_cycle=1).run_cycle()
    deleted = queue.prune_sent([URL], older_than_ms=NOW_MS)
    assert deleted == 6 and queue.count() == 4 and pending(queue) == 4


def test_disk_cap_drops_oldest_unsent_and_counts_them(queue: SampleQueue) -> None:
    queue.append([Sample("x", float(i), NOW_MS + i, make_labels(k=str(i % 50))) for i in range(40_000)])
    before = queue.used_bytes()
    dropped = queue.enforce_max_size(before // 2, [URL], step=2000)
    assert queue.used_bytes() <= before // 2
    assert dropped == 40_000 - queue.count() and dropped > 0
    assert min(r.ts for r in queue.all()) > NOW_MS  # the oldest went first


def test_vmauth_unknown_token_400_keeps_everything_queued(queue: SampleQueue) -> None:
    """Debian's vmauth 1.79 answers a wrong bearer token with 400, not 401."""
    fill(queue, 6)
    body = b'cannot find the provided auth token "Bearer s3cr3t"'
    transport = ScriptedTransport(*[Response(400, {}, body)] * 20)
    result = make(queue, transport).run_cycle()
    assert "authentication refused" in (result.error or "")
    assert pending(queue) == 6 and queue.dead_letters() == [] and len(transport.requests) == 1


def test_a_destination_refusing_every_sample_is_not_poison(queue: SampleQueue) -> None:
    fill(queue, 6)
    transport = ScriptedTransport(*[Response(400, {}, b"some proxy says no")] * 50)
    result = make(queue, transport).run_cycle()
    assert "destination refuses uploads" in (result.error or "")
    assert pending(queue) == 6 and queue.dead_letters() == [] and len(transport.requests) == 1


def test_dead_letter_reasons_never_hold_a_secret(queue: SampleQueue) -> None:
    from belabox_metrics.logs import register_secret
    register_secret("tok-9f8e7d6c5b4a")
    fill(queue, 4)
    transport = ScriptedTransport(refuse={2.0})
    # VictoriaMetrics echoes the request URI, query string (and a token in it) included.
    transport.refuse_body = (b'remoteAddr: "127.0.0.1:5"; requestURI: /api/v1/import?auth=tok-9f8e7d6c5b4a; '  # type: ignore[attr-defined]
                             b"cannot read vmimport data: too long line: more than 200 bytes")
    make(queue, transport).run_cycle()
    reasons = [reason for _, reason in queue.dead_letters()]
    assert reasons and all("tok-9f8e7d6c5b4a" not in r for r in reasons)


# -- refusals that are not the samples' fault: no dead letters, no storms (issue 16) ----------
# nginx 1.22 (Debian) answering plain http sent to its TLS port, captured.
NGINX_400 = (b"<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n"
             b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
             b"<center>The plain HTTP request was sent to HTTPS port</center>\r\n"
             b"<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n")


class TimedDestination:
    """A destination whose answer depends on the (fake) time: ``windows`` is a list of
    (until_monotonic, Response) taken in order, then 204 for ever, and a ``refuse`` set of
    values it refuses with VictoriaMetrics' per-line error. Every request takes ``rtt``."""

    def __init__(self, clock: FakeClock, windows: list[tuple[float, Response]], rtt: float = 0.05,
                 refuse: set[float] | None = None) -> None:
        self.clock = clock
        self.windows = windows
        self.rtt = rtt
        self.refuse = refuse or set()
        self.requests: list[list[float]] = []
        self.stored: list[float] = []

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        self.clock.advance(self.rtt)
        lines = [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
        values = [float(v) for line in lines for v in line["values"]]
        self.requests.append(values)
        now = self.clock.monotonic()
        for until, answer in self.windows:
            if now < until and answer.status >= 300:
                return answer
            if now < until:
                break
        if self.refuse & set(values):
            return Response(400, {}, VM_REFUSAL)
        self.stored.extend(values)
        return Response(204)

    def close(self) -> None:
        pass


def drain(uploader: Uploader, clock: FakeClock, queue: SampleQueue, cycles: int = 200,
          interval: float = 5.0) -> list[int]:
    """Run upload cycles every ``interval`` until nothing is pending; requests per cycle."""
    transport = uploader.transport
    assert isinstance(transport, (TimedDestination, ScriptedTransport))
    per_cycle = []
    for _ in range(cycles):
        before = len(transport.requests)
        uploader.run_cycle()
        per_cycle.append(len(transport.requests) - before)
        if pending(queue) == 0:
            break
        clock.advance(interval)
    return per_cycle


def test_blanket_nginx_400_is_one_request_per_cycle_no_dead_letters_and_backs_off(queue: SampleQueue) -> None:
    fill(queue, 78)
    clock = FakeClock(wall=NOW)
    transport = ScriptedTransport(*[Response(400, {"Content-Type": "text/html"}, NGINX_400)] * 1000)
    up = make(queue, transport, clock, max_samples=100, backoff_base=1.0, backoff_max=60.0)
    per_cycle = []
    for _ in range(30):  # 30 cycles, 5 s apart
        before = len(transport.requests)
        result = up.run_cycle()
        per_cycle.append(len(transport.requests) - before)
        clock.advance(5.0)
    # Before: 155 requests (2N-1) and as many warnings every cycle, and dead letters.
    assert max(per_cycle) == 1 and sum(per_cycle) < 30  # backing off: some cycles send nothing
    assert queue.dead_letters() == [] and pending(queue) == 78
    assert "destination refuses uploads" in (result.error or "") and "plain HTTP request" in (result.error or "")
    assert up.refusing is not None and "plain HTTP request" in up.refusing
    assert up.refusals_total == sum(per_cycle) and up.bisect_requests_total == 0


def test_halves_refused_alike_is_the_destination_not_a_sample(queue: SampleQueue) -> None:
    fill(queue, 64)
    # Alike but for the client port VictoriaMetrics names (a new connection per request).
    transport = ScriptedTransport(*[Response(400, {}, VM_REFUSAL.replace(b":41202", f":{40000 + i}".encode()))
                                    for i in range(1000)])
    result = make(queue, transport, max_samples=64).run_cycle()
    assert len(transport.requests) == 3  # the batch, then each half: refused alike, stop
    assert queue.dead_letters() == [] and pending(queue) == 64
    assert "both halves refused alike" in (result.error or "")


def test_vm_per_line_refusal_dead_letters_only_that_sample_within_budget(queue: SampleQueue) -> None:
    fill(queue, 100)
    transport = ScriptedTransport(refuse={37.0})
    up = make(queue, transport, max_samples=100)
    result = up.run_cycle()
    dead = queue.dead_letters()
    assert [r.sample.value for r, _ in dead] == [37.0] and "too long line" in dead[0][1]
    assert result.dead == 1 and pending(queue) == 0
    assert sorted(set(transport.values()) - {37.0}) == [float(i) for i in range(100) if i != 37]
    assert len(transport.requests) <= 1 + 2 * 7 + 2 + 3  # the batch, the budget, three to settle
    assert up.bisect_requests_total == len(transport.requests) - 1 and up.refusals_total == 0


def test_bisection_budget_bounds_requests_and_the_rest_waits(queue: SampleQueue) -> None:
    fill(queue, 256)
    bad = {float(v) for v in range(129, 250, 2)}  # every other one of the second half
    transport = ScriptedTransport(refuse=bad)
    up = make(queue, transport, max_samples=256)
    result = up.run_cycle()
    assert len(transport.requests) <= 1 + 2 * 8 + 2 + 3  # the batch, the budget, three to settle
    assert "bisection budget spent" in (result.error or "")
    assert {r.sample.value for r, _ in queue.dead_letters()} <= bad and pending(queue) > 0
    dead = [r.sample.value for r, _ in queue.dead_letters()]
    assert dead and dead == sorted(bad)[:len(dead)] and pending(queue) <= 256 - 129
    clock = up.clock
    assert isinstance(clock, FakeClock)
    per_cycle = drain(up, clock, queue)  # the next cycles go on where this one stopped
    assert max(per_cycle) <= 1 + 2 * 8 + 2 + 3 and pending(queue) == 0
    assert sorted(r.sample.value for r, _ in queue.dead_letters()) == sorted(bad)


def test_named_sample_refused_by_metrics_receiver_is_dead_lettered_alone(queue: SampleQueue) -> None:
    fill(queue, 10)

    class Receiver:
        def __init__(self) -> None:
            self.requests: list[list[object]] = []

        def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
            metrics = json.loads(gzip.decompress(body))["metrics"]
            self.requests.append([m["value"] for m in metrics])
            for index, item in enumerate(metrics):
                if item["value"] == 4.0:  # what metrics-receiver answers (receiver/validate.py)
                    return Response(400, {"Content-Type": "application/json"}, json.dumps(
                        {"success": False, "error": f"metrics[{index}].labels: has 70 labels, at most 64 allowed"}
                    ).encode())
            return Response(200, {}, json.dumps({"success": True, "received": len(metrics)}).encode())

        def close(self) -> None:
            pass

    receiver = Receiver()
    up = Uploader(queue, receiver, url=URL, fmt=wire_format("json", "box-1"), clock=FakeClock(wall=NOW),
                  log=logging.getLogger("test"), policy=UploadPolicy(max_samples=10), rng=random.Random(1))
    result = up.run_cycle()
    assert [r.sample.value for r, _ in queue.dead_letters()] == [4.0] and pending(queue) == 0
    assert result.dead == 1 and len(receiver.requests) == 3  # all, before it, after it


@pytest.mark.parametrize("body", [NGINX_400, VM_REFUSAL], ids=["nginx-html", "vm-format"])
@pytest.mark.parametrize("phase", [i * 0.05 for i in range(12)])
def test_503_then_blanket_400_window_then_204_dead_letters_nothing(queue: SampleQueue, body: bytes,
                                                                  phase: float) -> None:
    """20 s of 503, then 4 s of blanket 400 (a proxy restarting, a misrouted vmauth), then
    204. Before: the refused prefix was committed as dead letters (hundreds of valid samples)."""
    fill(queue, 400, series=4)
    clock = FakeClock(wall=NOW)
    start = clock.monotonic() + phase
    windows = [(start + 20.0, Response(503)), (start + 24.0, Response(400, {}, body))]
    destination = TimedDestination(clock, windows)
    up = make(queue, destination, clock, max_samples=200, max_attempts=3, backoff_base=0.5, backoff_max=2.0)
    drain(up, clock, queue, interval=1.0)
    assert queue.dead_letters() == [] and pending(queue) == 0
    assert sorted(set(destination.stored)) == [float(i) for i in range(400)]
    assert up.refusing is None and up.last_error is None


def test_a_window_edge_inside_a_bisection_does_not_convict_valid_samples(queue: SampleQueue) -> None:
    """A VictoriaMetrics-worded blanket refusal (3 to 30 round trips long) that starts and
    ends anywhere in the search for a genuinely bad sample: only the bad sample becomes a
    dead letter, every other one is delivered."""
    for phase, length in [(i * 0.01, length) for i in range(40) for length in (0.03, 0.12, 0.3)]:
        queue.conn.execute("DELETE FROM samples")
        queue.conn.execute("DELETE FROM upload_state")
        queue.conn.execute("DELETE FROM dead_letters")
        fill(queue, 64)
        clock = FakeClock(wall=NOW)
        start = clock.monotonic()
        # 204 for a moment, then a blanket window, then 204 again.
        windows = [(start + phase, Response(204)), (start + phase + length, Response(400, {}, VM_REFUSAL))]
        destination = TimedDestination(clock, windows, rtt=0.01, refuse={50.0})
        up = make(queue, destination, clock, max_samples=64)
        drain(up, clock, queue, interval=1.0)
        assert [r.sample.value for r, _ in queue.dead_letters()] == [50.0], (phase, length)
        assert set(destination.stored) == {float(i) for i in range(64) if i != 50}, (phase, length)


def test_identical_warnings_are_written_once_then_counted_each_minute(queue: SampleQueue,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    fill(queue, 20)
    clock = FakeClock(wall=NOW)
    transport = ScriptedTransport(*[Response(400, {}, NGINX_400)] * 1000)
    up = make(queue, transport, clock, max_samples=20, backoff_base=0.1, backoff_max=0.1, jitter=0.0)
    with caplog.at_level(logging.WARNING, logger="test"):
        for _ in range(100):  # 100 cycles, 1 s apart: one request each
            up.run_cycle()
            clock.advance(1.0)
    failures = [r for r in caplog.records if r.getMessage() == "upload failed; samples stay queued"]
    assert len(transport.requests) == 100
    assert len(failures) == 2  # the first, then one a minute later with the count
    assert vars(failures[1])["fields"]["repeated"] == 59


@pytest.mark.parametrize("answer", [Response(401, {}, b"Unauthorized"), Response(404, {}, b"404 page not found")],
                         ids=["401", "404"])
def test_a_refused_request_backs_off_and_shows_as_refusing(queue: SampleQueue, answer: Response) -> None:
    fill(queue, 5)
    clock = FakeClock(wall=NOW)
    transport = ScriptedTransport(*[answer] * 100)
    up = make(queue, transport, clock, backoff_base=10.0, backoff_max=60.0, jitter=0.0)
    first = up.run_cycle()
    assert f"HTTP {answer.status}" in (first.error or "") and up.refusing is not None
    clock.advance(5.0)
    assert up.run_cycle().error == up.last_error and len(transport.requests) == 1  # held: no request
    clock.advance(10.0)
    up.run_cycle()
    assert len(transport.requests) == 2 and pending(queue) == 5 and queue.dead_letters() == []
    up.transport = ScriptedTransport()  # fixed
    clock.advance(60.0)
    assert up.run_cycle().acknowledged == 5 and up.refusing is None and up.last_error is None
