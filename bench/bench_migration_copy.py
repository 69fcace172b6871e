"""What a rollback-safe migration costs: the copy the agent keeps before migrating
(``VACUUM INTO``), next to a plain file copy of the same database and SQLite's backup API
(the peers), the migration
itself without the copy, and ``downgrade-db`` (the schema 4 layout rebuilt from every table).

    .venv/bin/python -m bench.bench_migration_copy [--samples 2000000] [--quick]

The database holds the default BELABOX metric set (65 series), one round per second, a third
of it acknowledged. Times are wall clock with a warm page cache on this machine, fsync
included (the copy is fsync'd before it counts); an SD card is slower, in proportion to bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import time

from belabox_metrics.store.db import connect
from belabox_metrics.store.downgrade import downgrade
from belabox_metrics.store.migrations import copy_path, migrate
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.store.schema import MIGRATIONS
from bench._common import belabox_series, now_ms, rounds, table, temp_dir

DESTINATION = "http://127.0.0.1:1/api/v1/import"


def build(path: str, samples: int) -> None:
    queue = SampleQueue.open(path)
    batch: list = []  # type: ignore[type-arg]
    for round_ in rounds(belabox_series(), samples, now_ms() - samples // 65 * 1000):
        batch.extend(round_)
        if len(batch) >= 10_000:
            queue.append(batch)
            batch = []
    if batch:
        queue.append(batch)
    sent = 0
    while sent < samples // 3:
        claim = queue.next_batch(DESTINATION, 10_000)
        if claim is None:
            break
        queue.ack(DESTINATION, claim)
        sent += len(claim.rows)
    queue.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    queue.close()


def fsync_copy(src: str, dst: str) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb") as handle:
        os.fsync(handle.fileno())


def backup_copy(src: str, dst: str) -> None:
    """SQLite's online backup API, page by page: the other consistent copy."""
    source, target = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    with open(dst, "rb") as handle:
        os.fsync(handle.fileno())


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2_000_000)
    parser.add_argument("--quick", action="store_true", help="200,000 samples")
    args = parser.parse_args(argv)
    samples = 200_000 if args.quick else args.samples
    with temp_dir("bench-migration-") as tmp:
        latest = os.path.join(tmp, "latest.db")
        build(latest, samples)
        # downgrade-db 5 -> 4: every table into the schema 4 layout.
        rebuild_s = timed(lambda: downgrade(latest, 4))
        schema4 = latest  # now at schema 4; the schema 5 database is kept beside it
        size = os.path.getsize(schema4)
        os.unlink(copy_path(schema4, 5))

        peer = os.path.join(tmp, "peer.db")
        peer_s = timed(lambda: fsync_copy(schema4, peer))
        paged = os.path.join(tmp, "paged.db")
        backup_s = timed(lambda: backup_copy(schema4, paged))
        backup_bytes = os.path.getsize(paged)

        bare = os.path.join(tmp, "bare.db")
        fsync_copy(schema4, bare)
        migrate_s = timed(lambda: migrate(connect(bare), MIGRATIONS, path=bare))

        agent = os.path.join(tmp, "agent.db")
        fsync_copy(schema4, agent)
        with_copy_s = timed(lambda: SampleQueue.open(agent).close())
        copy_bytes = os.path.getsize(copy_path(agent, 4))
    mib = size / 2**20
    rows = [
        ["plain file copy + fsync (peer)", f"{peer_s:.2f}", f"{mib / peer_s:.0f}", size],
        ["SQLite backup API + fsync (peer)", f"{backup_s:.2f}", f"{mib / backup_s:.0f}", backup_bytes],
        ["migration 4 -> 5 alone (CREATE INDEX)", f"{migrate_s:.2f}", "", ""],
        ["agent start 4 -> 5: VACUUM INTO copy + migration", f"{with_copy_s:.2f}", f"{mib / with_copy_s:.0f}",
         copy_bytes],
        ["  of which the copy", f"{with_copy_s - migrate_s:.2f}", f"{mib / max(with_copy_s - migrate_s, 1e-9):.0f}", ""],
        ["downgrade-db 5 -> 4 (rebuild every table)", f"{rebuild_s:.2f}", f"{mib / rebuild_s:.0f}", ""],
    ]
    print(f"database: {samples:,} samples, {size:,} bytes ({size / samples:.1f} B/sample)")
    print(table(["operation", "seconds", "MiB/s of database", "bytes written"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
