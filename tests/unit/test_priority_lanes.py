"""Priority classes P0 ... P3: one upload lane per class, each drained oldest first, served in
order; a real SQLite queue and the real uploader against a scripted transport (the edge)."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.priority import DEFAULT_CLASSES, PrioritySettings, classifier
from belabox_metrics.store.db import connect
from belabox_metrics.store.migrations import migrate
from belabox_metrics.store.queue import SKIP_AHEAD_MS, SampleQueue, SeriesLanes
from belabox_metrics.store.schema import MIGRATIONS
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import Response
from belabox_metrics.upload.uploader import Uploader, UploadPolicy
from tests.unit.test_uploader import ScriptedTransport

URL = "http://127.0.0.1:9/api/v1/import"
NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)
# P0: SRT, P1: cpu, P2: everything else, P3: counters.
CLASSES = PrioritySettings(classes=(("srt.*",), ("cpu.*",), (), ("*_total",)))


def lanes(settings: PrioritySettings = CLASSES) -> SeriesLanes:
    return SeriesLanes(classifier(settings))


@pytest.fixture
def queue(tmp_path: Path) -> SampleQueue:
    return SampleQueue.open(str(tmp_path / "m.db"), lanes=lanes())


def uploader(queue: SampleQueue, transport: ScriptedTransport, *, live: bool = False,
             settings: PrioritySettings = CLASSES, **policy: object) -> Uploader:
    return Uploader(queue, transport, url=URL, fmt=wire_format("vm-jsonl", "box"), clock=FakeClock(wall=NOW),
                    log=logging.getLogger("test"), rng=random.Random(1),
                    policy=UploadPolicy(**{"max_samples": 10, **policy}),  # type: ignore[arg-type]
                    lanes=lambda: settings.lanes(live))


def series_samples(name: str, count: int, start_ms: int, step_ms: int = 1000, first_value: float = 0.0,
                   **labels: str) -> list[Sample]:
    return [Sample(name, first_value + i, start_ms + i * step_ms, make_labels(**labels)) for i in range(count)]


def delivered(transport: ScriptedTransport) -> list[tuple[str, int, float]]:
    """(metric, timestamp, value) in the order they went out."""
    out = []
    for lines in transport.requests:
        for line in lines:
            name = str(line["metric"]["__name__"])  # type: ignore[index]
            out.extend((name, ts, v) for ts, v in zip(line["timestamps"], line["values"], strict=True))  # type: ignore[call-overload]
    return out


def test_classifier_matches_configured_and_promql_names_first_class_wins() -> None:
    classify = classifier(PrioritySettings(classes=(("srt_*",), ("srt.rtt*", "cpu.*"), (), ("*_total",))))
    assert classify("srt.rtt_seconds") == 0          # P0 by its PromQL name, before P1's pattern
    assert classify("cpu.usage_percent") == 1
    assert classify("network.receive_bytes_total") == 3
    assert classify("memory.used_bytes") == 2         # no pattern: the default class
    defaults = classifier(PrioritySettings())
    assert [defaults(n) for n in ("srt.rtt_seconds", "belabox.modem_signal_percent", "cpu.temperature",
                                  "cpu.usage_percent", "disk.read_bytes_per_second", "disk.reads_total",
                                  "storage.metrics_pending_upload")] == [0, 0, 0, 1, 2, 3, 0]
    assert set(DEFAULT_CLASSES) == {"P0", "P1", "P2", "P3"}


def test_p0_goes_first_then_each_lane_oldest_first_each_series_in_time_order(queue: SampleQueue) -> None:
    start = NOW_MS - 3_600_000
    queue.append(series_samples("disk.read_bytes_per_second", 30, start, device="sda"))
    queue.append(series_samples("cpu.usage_percent", 15, start, first_value=100))
    queue.append(series_samples("srt.rtt_seconds", 12, start, first_value=200))
    transport = ScriptedTransport()
    result = uploader(queue, transport).run_cycle()
    assert result.error is None and queue.pending_count(URL) == 0
    sent = delivered(transport)
    names = [name for name, _, _ in sent]
    # Lanes in order: all of P0, then P1, then P2; a request with room left takes the next
    # lane's rows too (one request per 10 samples, not one per lane).
    assert names == ["srt_rtt_seconds"] * 12 + ["cpu_usage_percent"] * 15 + ["disk_read_bytes_per_second"] * 30
    assert [[(line["metric"]["__name__"], len(line["values"])) for line in r]  # type: ignore[index]
            for r in transport.requests] == [
        [("srt_rtt_seconds", 10)],
        [("srt_rtt_seconds", 2), ("cpu_usage_percent", 8)],
        [("cpu_usage_percent", 7), ("disk_read_bytes_per_second", 3)],
        [("disk_read_bytes_per_second", 10)], [("disk_read_bytes_per_second", 10)],
        [("disk_read_bytes_per_second", 7)]]
    for name in set(names):
        stamps = [ts for n, ts, _ in sent if n == name]
        assert stamps == sorted(stamps) and len(stamps) == len(set(stamps))


def test_one_request_carries_every_lanes_new_rows_and_a_partial_ack_splits_across_lanes(
        queue: SampleQueue) -> None:
    start = NOW_MS - 60_000
    queue.append(series_samples("srt.rtt_seconds", 3, start))
    queue.append(series_samples("cpu.usage_percent", 3, start, first_value=10))
    queue.append(series_samples("memory.used_bytes", 3, start, first_value=20))
    claims = queue.next_claims(URL, 100)
    assert [(c.region, c.lane, len(c.rows)) for c in claims] == [("backlog", 0, 3), ("backlog", 1, 3),
                                                                  ("backlog", 2, 3)]
    assert [c.lane for c in queue.next_claims(URL, 100, combine=False)] == [0]
    assert [len(c.rows) for c in queue.next_claims(URL, 5)] == [3, 2]   # the limit counts across lanes
    # The destination took 4 of the 9: all of P0 and the first of P1, in one transaction.
    queue.ack_claims(URL, claims, 4)
    assert queue.pending_by_lane(URL) == {0: 0, 1: 2, 2: 3}
    rest = queue.next_claims(URL, 100)
    assert [(c.lane, [r.sample.value for r in c.rows]) for c in rest] == [(1, [11.0, 12.0]),
                                                                         (2, [20.0, 21.0, 22.0])]
    queue.ack_claims(URL, rest)
    assert queue.pending_count(URL) == 0 and queue.next_claims(URL, 100) == []


def test_late_rows_and_lane_rows_share_a_request(queue: SampleQueue) -> None:
    start = NOW_MS - 60_000
    queue.append(series_samples("srt.rtt_seconds", 3, start))
    queue.ack_claims(URL, queue.next_claims(URL, 100))
    queue.append([Sample("srt.rtt_seconds", 9.0, start + 500, ())])        # inside the sent range: late
    queue.append(series_samples("memory.used_bytes", 2, start, first_value=20))
    claims = queue.next_claims(URL, 100)
    assert [(c.region, len(c.rows)) for c in claims] == [("late", 1), ("backlog", 2)]
    queue.ack_claims(URL, claims)
    assert queue.pending_count(URL) == 0


def test_a_sample_with_a_stored_key_is_ignored_and_the_sent_one_not_sent_again(queue: SampleQueue) -> None:
    start = NOW_MS - 60_000
    queue.append(series_samples("memory.used_bytes", 3, start, first_value=1))
    transport = ScriptedTransport()
    uploader(queue, transport).run_cycle()
    # Same series, same millisecond, another value (a clock stepped back onto a stamp already
    # used): the store keeps the first value, which was sent; nothing becomes late.
    assert queue.append([Sample("memory.used_bytes", 99.0, start + 1000, ())]) == 0
    assert queue.pending_count(URL) == 0
    uploader(queue, transport).run_cycle()
    assert delivered(transport) == [("memory_used_bytes", start + i * 1000, 1.0 + i) for i in range(3)]


def test_new_p0_samples_jump_a_lower_lanes_backlog(queue: SampleQueue) -> None:
    start = NOW_MS - 3_600_000
    queue.append(series_samples("disk.read_bytes_per_second", 40, start, device="sda"))
    transport = ScriptedTransport()
    up = uploader(queue, transport, max_batches_per_cycle=2)
    up.run_cycle()                               # 20 of the 40 P2 samples
    queue.append(series_samples("srt.rtt_seconds", 3, NOW_MS, first_value=500))
    up.run_cycle()
    assert [n for n, _, _ in delivered(transport)][20:23] == ["srt_rtt_seconds"] * 3
    up.policy = UploadPolicy(max_samples=10)
    up.run_cycle()
    assert sorted(v for _, _, v in delivered(transport)) == [*map(float, range(40)), 500.0, 501.0, 502.0]


def test_by_default_every_class_goes_while_live_in_priority_order(queue: SampleQueue) -> None:
    start = NOW_MS - 60_000
    queue.append(series_samples("network.receive_bytes_total", 5, start, interface="wwan0"))
    queue.append(series_samples("srt.rtt_seconds", 5, start, first_value=10))
    transport = ScriptedTransport()
    uploader(queue, transport, live=True, settings=PrioritySettings()).run_cycle()
    assert [n for n, _, _ in delivered(transport)] == ["srt_rtt_seconds"] * 5 + ["network_receive_bytes_total"] * 5
    assert queue.pending_count(URL) == 0


def test_while_live_p3_held_back_waits_and_goes_once_the_stream_stops(queue: SampleQueue) -> None:
    start = NOW_MS - 60_000
    queue.append(series_samples("network.receive_bytes_total", 5, start, interface="wwan0"))
    queue.append(series_samples("srt.rtt_seconds", 5, start, first_value=10))
    transport = ScriptedTransport()
    held = PrioritySettings(while_live=(0, 1, 2))
    uploader(queue, transport, live=True, settings=held).run_cycle()
    assert {n for n, _, _ in delivered(transport)} == {"srt_rtt_seconds"}
    assert queue.pending_by_lane(URL) == {0: 0, 3: 5}
    assert queue.stats(URL, totals=False).pending_by_class == {"P0": 0, "P3": 5}
    uploader(queue, transport, live=False, settings=held).run_cycle()
    assert [v for n, _, v in delivered(transport) if n == "network_receive_bytes_total"] == [0, 1, 2, 3, 4]
    assert queue.pending_count(URL) == 0


def test_late_detection_is_per_lane(queue: SampleQueue) -> None:
    start = NOW_MS - 60_000
    queue.append(series_samples("srt.rtt_seconds", 5, start))
    transport = ScriptedTransport()
    uploader(queue, transport, live=True, settings=PrioritySettings(classes=(("srt.*",), (), (), ()),
                                                                     while_live=(0,))).run_cycle()
    # A P2 sample older than P0's mark is not late for P2 (nothing of P2 was sent): it simply
    # waits in its lane. A P0 sample older than P0's mark is late and goes first next time.
    queue.append([Sample("memory.used_bytes", 7.0, start + 500, ())])
    queue.append([Sample("srt.rtt_seconds", 99.0, start + 1500, ())])
    late_rows = queue.conn.execute("SELECT COUNT(*) FROM late_samples").fetchone()[0]
    assert late_rows == 1 and queue.pending_by_lane(URL) == {0: 1, 2: 1}
    uploader(queue, transport).run_cycle()
    tail = delivered(transport)[5:]
    assert tail == [("srt_rtt_seconds", start + 1500, 99.0), ("memory_used_bytes", start + 500, 7.0)]
    assert queue.pending_count(URL) == 0


def test_an_empty_lane_skips_ahead_and_a_later_old_sample_is_still_sent(queue: SampleQueue) -> None:
    old = NOW_MS - 3_600_000
    queue.append(series_samples("srt.rtt_seconds", 2, old))
    queue.append(series_samples("memory.used_bytes", 3, old + SKIP_AHEAD_MS + 60_000, step_ms=60_000))
    transport = ScriptedTransport()
    up = uploader(queue, transport)
    up.run_cycle()                  # all five in one request: nothing left to look for
    assert queue.pending_count(URL) == 0
    up.run_cycle()                  # finds P0 empty, its mark far behind the newest sample
    newest = queue.newest_ts()
    assert newest is not None and queue.state(URL, 0).mark[0] == newest  # P0 moved up past P2's rows
    # An SRT sample stamped inside the skipped stretch (a slow source) is late, never lost.
    queue.append([Sample("srt.rtt_seconds", 42.0, old + SKIP_AHEAD_MS, ())])
    assert queue.pending_count(URL) == 1
    up.run_cycle()
    assert delivered(transport)[-1] == ("srt_rtt_seconds", old + SKIP_AHEAD_MS, 42.0)


def test_retention_prunes_each_lane_up_to_its_own_progress(queue: SampleQueue) -> None:
    old = NOW_MS - 10 * 86_400_000
    queue.append(series_samples("srt.rtt_seconds", 3, old))
    queue.append(series_samples("memory.used_bytes", 3, old))
    uploader(queue, ScriptedTransport(), live=True,
             settings=PrioritySettings(classes=(("srt.*",), (), (), ()), while_live=(0,))).run_cycle()
    assert queue.prune_sent([URL], NOW_MS - 86_400_000) == 3      # the sent P0 rows only
    assert {r.sample.name for r in queue.all()} == {"memory.used_bytes"}
    assert queue.pending_count(URL) == 3


def reopen(path: Path, settings: PrioritySettings, *, owns_upload_state: bool = False) -> SampleQueue:
    return SampleQueue.open(str(path / "m.db"), lanes=lanes(settings), owns_upload_state=owns_upload_state)


def test_a_class_change_waits_for_the_backlog_then_moves_without_loss_or_duplicate(tmp_path: Path) -> None:
    queue = reopen(tmp_path, CLASSES)
    start = NOW_MS - 3_600_000
    queue.append(series_samples("srt.rtt_seconds", 12, start))
    queue.append(series_samples("memory.used_bytes", 12, start, first_value=100))
    transport = ScriptedTransport()
    uploader(queue, transport, max_batches_per_cycle=2).run_cycle()   # P0 done, P2 untouched
    # The config now puts memory in P0 and SRT in P2: the lanes' progress differs and data is
    # pending, so moving now would resend or skip samples. The move waits.
    swapped = PrioritySettings(classes=(("memory.*",), (), (), ()))
    queue = reopen(tmp_path, swapped)
    assert queue.apply_classes([URL]) == (0, 2)
    up = uploader(queue, transport, settings=swapped)
    up.run_cycle()
    assert queue.pending_count(URL) == 0
    assert queue.apply_classes([URL]) == (2, 0)                       # caught up: moved
    queue.append(series_samples("srt.rtt_seconds", 2, NOW_MS, first_value=50))
    queue.append(series_samples("memory.used_bytes", 2, NOW_MS, first_value=150))
    up.run_cycle()
    sent = delivered(transport)
    assert sorted(v for _, _, v in sent) == sorted([*map(float, range(12)), 50.0, 51.0,
                                                    *map(float, range(100, 112)), 150.0, 151.0])
    assert len(sent) == len(set(sent)) == 28


def test_a_class_change_with_equal_progress_moves_at_once(tmp_path: Path) -> None:
    queue = reopen(tmp_path, CLASSES)
    queue.append(series_samples("memory.used_bytes", 5, NOW_MS - 60_000))
    queue.append(series_samples("disk.reads_per_second", 5, NOW_MS - 60_000, device="sda"))
    # Nothing sent yet: every lane's progress is the same (none), so a move changes nothing.
    queue = reopen(tmp_path, PrioritySettings(classes=(("memory.*",), (), (), ())))
    assert queue.apply_classes([URL]) == (1, 0)
    transport = ScriptedTransport()
    uploader(queue, transport, max_samples=100).run_cycle()
    assert [n for n, _, _ in delivered(transport)][:5] == ["memory_used_bytes"] * 5
    assert queue.pending_count(URL) == 0


def v3_database_with_progress(path: str) -> None:
    conn = connect(path)
    migrate(conn, MIGRATIONS, path=path, target=3)
    conn.execute("INSERT INTO series (id, name, labels, value_type) VALUES (1, 'srt.rtt_seconds', '', 0), "
                 "(2, 'memory.used_bytes', '', 0)")
    conn.executemany("INSERT INTO samples (ts, series_id, value) VALUES (?, ?, ?)",
                     [(NOW_MS - 10_000 + i * 1000, 1 + i % 2, float(i)) for i in range(10)])
    conn.execute("INSERT INTO upload_state (destination, mark_ts, mark_sid, updated_at_ms) VALUES (?, ?, ?, 0)",
                 (URL, NOW_MS - 10_000 + 5000, 2))
    conn.close()


def test_migration_to_lanes_keeps_progress_and_applies_the_classes(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    v3_database_with_progress(path)
    queue = SampleQueue.open(path, lanes=lanes())
    assert queue.pending_count(URL) == 4            # rows 6..9 were pending before, and still are
    assert queue.apply_classes([URL]) == (1, 0)      # SRT moves to P0: every lane started equal
    transport = ScriptedTransport()
    uploader(queue, transport).run_cycle()
    assert [(n, v) for n, _, v in delivered(transport)] == [("srt_rtt_seconds", 6.0), ("srt_rtt_seconds", 8.0),
                                                             ("memory_used_bytes", 7.0), ("memory_used_bytes", 9.0)]


class InFlight(ScriptedTransport):
    """Runs ``during`` while each request is on the wire, then answers as scripted."""

    def __init__(self, during: Callable[[], None]) -> None:
        super().__init__()
        self.during = during

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        self.during()
        return super().post(url, body, headers)


# BELABOX_LANE_SEEDS=1000 for a long run (300 seeds found the re-sent duplicate key).
@pytest.mark.parametrize("cached", [True, False], ids=["states-cached", "states-read"])
@pytest.mark.parametrize("seed", range(int(os.environ.get("BELABOX_LANE_SEEDS", "12"))))
def test_random_interleavings_deliver_every_sample_exactly_once(tmp_path: Path, seed: int, cached: bool) -> None:
    """Appends (some with old timestamps, some while a request is in flight, by either
    connection), partial acknowledgements, live/not live, and a class change mid-way, at
    random: every stored sample is delivered once, and outside the late path each series
    arrives in time order. The uploader's queue caches the lanes' states as
    the agent's upload thread does, or reads them each time."""
    rng = random.Random(seed)
    names = ["srt.rtt_seconds", "cpu.usage_percent", "memory.used_bytes", "disk.reads_total"]
    settings = [CLASSES, PrioritySettings(classes=(("memory.*",), ("srt.*",), ("disk.*",), ("cpu.*",)))]
    queue = reopen(tmp_path, settings[0], owns_upload_state=cached)
    other = reopen(tmp_path, settings[0])   # the collection thread's queue
    other.lanes = queue.lanes
    # What the store keeps: the first value per (series, timestamp); a later sample with the
    # same key (the generator makes some) is ignored, and must not re-send the stored one.
    stored: dict[tuple[str, int], float] = {}
    backdated: set[tuple[str, int, float]] = set()
    moved = 0
    clock_ms = NOW_MS - 3_600_000
    value = 0.0
    current = 0

    def store(into: SampleQueue, count: int, backdate: float) -> None:
        nonlocal clock_ms, value
        batch = []
        for _ in range(count):
            clock_ms += rng.randint(1, 400)
            stamp = clock_ms - (rng.randint(1, 30_000) if rng.random() < backdate else 0)
            value += 1
            batch.append(Sample(rng.choice(names), value, stamp, ()))
            if stamp != clock_ms:
                backdated.add((batch[-1].name.replace(".", "_"), stamp, value))
        into.append(batch)
        for s in batch:
            stored.setdefault((s.name.replace(".", "_"), s.timestamp_ms), s.value)  # type: ignore[arg-type]

    def while_in_flight() -> None:
        # Between a claim and its acknowledgement: samples committed behind the claim (older
        # keys inside the claimed range) by the other connection, or by this one.
        if rng.random() < 0.3:
            store(other if rng.random() < 0.8 else queue, rng.randint(1, 3), backdate=0.5)

    transport = InFlight(while_in_flight)
    for step in range(60):
        store(other, rng.randint(0, 12), backdate=0.1)
        if step == 30:
            current = 1
            queue = reopen(tmp_path, settings[1], owns_upload_state=cached)
            other.lanes = queue.lanes
        if rng.random() < 0.7:
            live = rng.random() < 0.5
            up = uploader(queue, transport, live=live, settings=settings[current],
                          max_samples=rng.randint(1, 15), max_batches_per_cycle=rng.randint(1, 4))
            up.run_cycle()
            moved += queue.apply_classes([URL])[0]
    transport.during = lambda: None  # the last cycles deliver what is stored
    up = uploader(queue, transport, settings=settings[current], max_samples=50)
    up.run_cycle()
    moved += queue.apply_classes([URL])[0]
    up.run_cycle()
    assert moved == 4  # every series changed class once
    sent = delivered(transport)
    assert len(sent) == len(set(sent)), "a sample was delivered twice"
    assert set(sent) == {(name, ts, value) for (name, ts), value in stored.items()}, \
        "a stored sample was never delivered"
    assert queue.pending_count(URL) == 0
    for name in {n for n, _, _ in sent}:
        in_order = [ts for n, ts, v in sent if n == name and (n, ts, v) not in backdated]
        assert in_order == sorted(in_order), f"{name} went out of time order"


def test_cached_states_are_dropped_when_the_acknowledgement_fails(tmp_path: Path) -> None:
    """The upload thread's queue keeps the lanes' states in memory. An acknowledgement whose
    transaction fails after one lane's state was written must not leave that state cached:
    the rows stay pending, and go out again."""
    queue = reopen(tmp_path, CLASSES, owns_upload_state=True)
    queue.append(series_samples("srt.rtt_seconds", 3, NOW_MS - 60_000)
                 + series_samples("memory.used_bytes", 3, NOW_MS - 60_000))
    claims = queue.next_claims(URL, 50)
    assert [c.lane for c in claims] == [0, 2]
    # The second lane's write fails inside the same transaction as the first's.
    queue.conn.execute("CREATE TEMP TRIGGER refuse_p2 BEFORE INSERT ON upload_state WHEN NEW.lane = 2 "
                       "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    with pytest.raises(sqlite3.DatabaseError, match="disk I/O error"):
        queue.ack_claims(URL, claims)
    queue.conn.execute("DROP TRIGGER refuse_p2")
    assert queue.pending_by_lane(URL) == {0: 3, 2: 3}
    again = queue.next_claims(URL, 50)
    assert [(c.lane, len(c.rows)) for c in again] == [(0, 3), (2, 3)]
    queue.ack_claims(URL, again)
    assert queue.pending_by_lane(URL) == {0: 0, 2: 0}
    assert SampleQueue.open(str(tmp_path / "m.db")).pending_count(URL) == 0  # written, not only cached


def test_unknown_lane_state_reads_as_nothing_sent(queue: SampleQueue) -> None:
    # A destination never seen: every lane starts before the first sample.
    queue.append(series_samples("srt.rtt_seconds", 2, NOW_MS))
    assert queue.pending_by_lane("http://127.0.0.1:9/other") == {0: 2}
    with pytest.raises(sqlite3.IntegrityError):
        queue.conn.execute("INSERT INTO upload_state (destination, lane, mark_ts, mark_sid, updated_at_ms) "
                           "VALUES ('x', 0, 0, 0, 0), ('x', 0, 1, 1, 0)")


def test_a_lane_found_empty_is_looked_at_again_once_anything_is_committed(tmp_path: Path) -> None:
    """A claim skips lanes it found empty until the database changes (its data_version for
    other connections' commits; any sample write of its own): a sample stored afterwards, by
    the collection thread's queue or by this one, goes in the very next claim."""
    queue = reopen(tmp_path, CLASSES, owns_upload_state=True)
    collection = reopen(tmp_path, CLASSES)
    collection.lanes = queue.lanes
    collection.append(series_samples("memory.used_bytes", 2, NOW_MS - 60_000))
    collection.append(series_samples("srt.rtt_seconds", 1, NOW_MS - 60_000))
    queue.ack_claims(URL, queue.next_claims(URL, 50))
    assert queue.next_claims(URL, 50) == []            # every lane empty now, and remembered so
    collection.append(series_samples("srt.rtt_seconds", 1, NOW_MS - 30_000, first_value=5))
    assert [(c.lane, [r.sample.value for r in c.rows]) for c in queue.next_claims(URL, 50)] == [(0, [5.0])]
    queue.ack_claims(URL, queue.next_claims(URL, 50))
    assert queue.next_claims(URL, 50) == []
    queue.append(series_samples("memory.used_bytes", 1, NOW_MS - 20_000, first_value=7))  # its own write
    assert [(c.lane, [r.sample.value for r in c.rows]) for c in queue.next_claims(URL, 50)] == [(2, [7.0])]
