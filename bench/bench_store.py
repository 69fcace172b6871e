"""SQLite store: inserts per second, bytes per sample on disk, and the cost of acknowledging
a 10k-sample upload, for our SampleQueue beside the seed's wide schema, in the same run.

    .venv/bin/python -m bench.bench_store [--samples 1000000] [--quick] [--no-scale]

- ours, round: ``SampleQueue.append`` once per collection round (65 samples, one fsync'd
  transaction each), as the collection loop does; ours, bulk: 10,000 samples per append.
- seed: the Milestone-1-plus-dedup wide table (id AUTOINCREMENT, 64-hex sha256 dedup key
  UNIQUE, index on (uploaded, timestamp), metric_name/metric_value/device_id/tags/value_type
  columns), one INSERT per sample with the key computed in Python, per round or per 10k;
  marking an upload is one UPDATE per row.

Both run with synchronous=FULL (production) and NORMAL. Only the store calls are timed, not
making the samples. Bytes per sample = database file size after a TRUNCATE checkpoint /
samples. Targets: ≥ 500k samples/s, ≤ 30 bytes/sample.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from belabox_metrics.model import Sample
from belabox_metrics.store.db import connect, transaction
from belabox_metrics.store.queue import SampleQueue
from bench._common import DEVICE_ID, belabox_series, now_ms, rounds, table, temp_dir

BULK = 10_000
ACK_CLAIM = 10_000
DESTINATION = "http://127.0.0.1:1/api/v1/import"

SEED_SCHEMA = (
    """CREATE TABLE metrics (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        timestamp INTEGER NOT NULL,
        metric_name TEXT NOT NULL,
        metric_value REAL,
        value_type TEXT NOT NULL DEFAULT 'numeric',
        device_id TEXT NOT NULL,
        tags TEXT NOT NULL DEFAULT '',
        dedup_key TEXT NOT NULL,
        uploaded INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE UNIQUE INDEX idx_metrics_dedup ON metrics(dedup_key)",
    "CREATE INDEX idx_metrics_upload ON metrics(uploaded, timestamp)",
)
SEED_INSERT = ("INSERT OR IGNORE INTO metrics (timestamp, metric_name, metric_value, value_type, device_id, "
               "tags, dedup_key) VALUES (?, ?, ?, 'numeric', ?, ?, ?)")


class SeedStore:
    """The seed's store, reproduced: what our design is measured against."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.conn = connect(path, synchronous=synchronous)
        for statement in SEED_SCHEMA:
            self.conn.execute(statement)

    def append(self, samples: Iterable[Sample]) -> None:
        with transaction(self.conn):
            for s in samples:
                tags = json.dumps(dict(s.labels), sort_keys=True, separators=(",", ":")) if s.labels else ""
                key = hashlib.sha256(
                    f"{DEVICE_ID}|{s.name}|{tags}|{s.timestamp_ms}|numeric".encode()).hexdigest()
                self.conn.execute(SEED_INSERT, (s.timestamp_ms, s.name, s.value, DEVICE_ID, tags, key))

    def claim_ids(self, limit: int) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM metrics WHERE uploaded = 0 ORDER BY timestamp LIMIT ?", (limit,))]

    def mark_uploaded(self, ids: list[int]) -> None:
        with transaction(self.conn):
            for row_id in ids:
                self.conn.execute("UPDATE metrics SET uploaded = 1 WHERE id = ?", (row_id,))

    def close(self) -> None:
        self.conn.close()


@dataclass
class InsertResult:
    store: str
    batching: str
    synchronous: str
    series: int
    samples: int
    seconds: float
    bytes_per_sample: float
    ack_ms: float | None = None

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


def _batches(series_copies: int, total: int, per_transaction: int | None) -> Iterable[list[Sample]]:
    """Rounds as collected, or rounds regrouped into ``per_transaction``-sample batches."""
    series = belabox_series(series_copies)
    start = now_ms() - (total // len(series) + 1) * 1000
    source = rounds(series, total, start)
    if per_transaction is None:
        yield from source
        return
    pending: list[Sample] = []
    for batch in source:
        pending.extend(batch)
        while len(pending) >= per_transaction:
            yield pending[:per_transaction]
            pending = pending[per_transaction:]
    if pending:
        yield pending


def _timed_inserts(append: Callable[[list[Sample]], object], batches: Iterable[list[Sample]]) -> tuple[int, float]:
    count = 0
    spent = 0.0
    for batch in batches:
        started = time.perf_counter()
        append(batch)
        spent += time.perf_counter() - started
        count += len(batch)
    return count, spent


def _file_bytes_after_checkpoint(conn: sqlite3.Connection, path: str) -> int:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(path)


def run_ours(directory: str, total: int, synchronous: str, bulk: bool, copies: int = 1,
             measure_ack: bool = False) -> InsertResult:
    path = os.path.join(directory, f"ours-{synchronous}-{bulk}-{copies}.db")
    queue = SampleQueue.open(path)
    queue.conn.execute(f"PRAGMA synchronous={synchronous}")
    count, spent = _timed_inserts(queue.append, _batches(copies, total, BULK if bulk else None))
    size = _file_bytes_after_checkpoint(queue.conn, path)
    ack_ms = None
    if measure_ack:
        timings = []
        for _ in range(min(5, count // ACK_CLAIM)):
            claim = queue.next_batch(DESTINATION, ACK_CLAIM, newest_first=False)
            assert claim is not None and len(claim.rows) == ACK_CLAIM
            started = time.perf_counter()
            queue.ack(DESTINATION, claim)
            timings.append(time.perf_counter() - started)
        ack_ms = statistics.median(timings) * 1000 if timings else None
    queue.close()
    os.remove(path)
    return InsertResult("ours", "bulk 10k" if bulk else "round", synchronous, len(belabox_series(copies)),
                        count, spent, size / count, ack_ms)


def run_seed(directory: str, total: int, synchronous: str, bulk: bool, copies: int = 1,
             measure_ack: bool = False) -> InsertResult:
    path = os.path.join(directory, f"seed-{synchronous}-{bulk}-{copies}.db")
    store = SeedStore(path, synchronous)
    count, spent = _timed_inserts(store.append, _batches(copies, total, BULK if bulk else None))
    size = _file_bytes_after_checkpoint(store.conn, path)
    ack_ms = None
    if measure_ack:
        timings = []
        for _ in range(min(5, count // ACK_CLAIM)):
            ids = store.claim_ids(ACK_CLAIM)
            assert len(ids) == ACK_CLAIM
            started = time.perf_counter()
            store.mark_uploaded(ids)
            timings.append(time.perf_counter() - started)
        ack_ms = statistics.median(timings) * 1000 if timings else None
    store.close()
    os.remove(path)
    return InsertResult("seed", "bulk 10k" if bulk else "round", synchronous, len(belabox_series(copies)),
                        count, spent, size / count, ack_ms)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="CI mode: 50,000 samples")
    parser.add_argument("--seed-samples", type=int, default=None,
                        help="samples for the seed's store (default: the same; it is ~20x slower)")
    parser.add_argument("--no-scale", action="store_true", help="skip the 10x/100x series runs")
    args = parser.parse_args(argv)
    total = 50_000 if args.quick else args.samples
    seed_total = args.seed_samples or total
    results: list[InsertResult] = []
    started = time.monotonic()
    with temp_dir("bench-store-") as directory:
        for synchronous in ("FULL", "NORMAL"):
            for bulk in (False, True):
                results.append(run_ours(directory, total, synchronous, bulk, measure_ack=bulk))
                results.append(run_seed(directory, seed_total, synchronous, bulk, measure_ack=bulk))
                _progress(results[-2:])
        scale = [] if args.no_scale else [10, 100]
        for copies in scale:
            for bulk in (False, True):
                results.append(run_ours(directory, total, "FULL", bulk, copies))
                _progress(results[-1:])

    print(f"\nstore insert, {total:,} samples (seed: {seed_total:,}), SQLite {sqlite3.sqlite_version}, "
          f"{time.monotonic() - started:.0f} s in all\n")
    rows: list[list[object]] = []
    for r in results:
        peer = next((p for p in results if p.store == "seed" and p.batching == r.batching
                     and p.synchronous == r.synchronous and p.series == r.series), None)
        ratio = f"{r.rate / peer.rate:.1f}x" if peer is not None and r.store == "ours" else ""
        ack_ratio = ""
        if r.store == "ours" and r.ack_ms and peer is not None and peer.ack_ms:
            ack_ratio = f"{peer.ack_ms / r.ack_ms:.0f}x faster"
        rows.append([r.store, r.batching, r.synchronous, r.series, r.samples, r.rate, ratio,
                     r.bytes_per_sample, "" if r.ack_ms is None else f"{r.ack_ms:.1f}", ack_ratio])
    print(table(["store", "per transaction", "synchronous", "series", "samples", "samples/s", "vs seed",
                 "bytes/sample", "ack 10k (ms)", "ack vs seed"], rows))
    ours_full = [r for r in results if r.store == "ours" and r.series == 65 and r.synchronous == "FULL"]
    print(f"\ntargets: insert >= 500,000 samples/s: round {ours_full[0].rate:,.0f}, bulk {ours_full[1].rate:,.0f}; "
          f"<= 30 bytes/sample: {ours_full[1].bytes_per_sample:.1f}")
    return 0


def _progress(done: list[InsertResult]) -> None:
    for r in done:
        print(f"  {r.store:4} {r.batching:8} {r.synchronous:6} {r.series:5} series: {r.rate:10,.0f} samples/s, "
              f"{r.bytes_per_sample:6.1f} B/sample", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
