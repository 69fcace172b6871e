"""Retention, the disk cap and WAL checkpoints, with an injected clock."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from belabox_metrics.clock import FakeClock
from belabox_metrics.config import parse_config
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.runtime.housekeeping import Housekeeping
from belabox_metrics.store.queue import SampleQueue

NOW = 1_795_000_000.0


def setup(tmp_path: Path, storage: str = "", retention: str = "1h") -> tuple[Housekeeping, SampleQueue, FakeClock]:
    settings = parse_config(f"""
device: {{id: h}}
storage: {{path: {tmp_path / 'm.db'}, retention: {retention}, wal_checkpoint_interval: 1h, wal_checkpoint_size: 1MiB {storage}}}
remote: {{url: "http://127.0.0.1:9/api"}}
metrics: [{{name: srt.packet_loss, mock: true}}]
""")
    queue = SampleQueue.open(settings.storage.path)
    clock = FakeClock(wall=NOW, monotonic=50.0)
    house = Housekeeping(queue, settings, ["http://127.0.0.1:9/api"], clock, logging.getLogger("t"))
    return house, queue, clock


def wal_size(path: Path) -> int:
    wal = Path(str(path) + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_checkpoint_on_size_truncates_the_wal_and_on_interval_keeps_its_file(tmp_path: Path) -> None:
    house, queue, clock = setup(tmp_path)
    queue.append([Sample("x", float(i), int(NOW * 1000) + i, make_labels(k=str(i % 97))) for i in range(60_000)])
    assert wal_size(tmp_path / "m.db") > 1024 * 1024
    house.run()  # WAL over wal_checkpoint_size: checkpoint now, not in an hour
    assert house.checkpoints == 1 and wal_size(tmp_path / "m.db") == 0
    queue.append([Sample("y", 1.0, int(NOW * 1000))])
    house.run()
    assert house.checkpoints == 1  # small WAL, interval not reached
    db_before = os.path.getsize(tmp_path / "m.db")
    queue.append([Sample("z", float(i), int(NOW * 1000) + i) for i in range(2000)])
    clock.advance(3601)
    house.run()
    # On the interval the pages go into the database, but the WAL file keeps its size, to be
    # overwritten in place: no file growth (and no ext4 journal commit) per fsync'd commit.
    assert house.checkpoints == 2 and wal_size(tmp_path / "m.db") > 0
    assert os.path.getsize(tmp_path / "m.db") > db_before
    _, in_wal, copied = queue.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert in_wal == copied  # every frame already in the database


def test_final_run_checkpoints_on_shutdown(tmp_path: Path) -> None:
    house, queue, _ = setup(tmp_path)
    queue.append([Sample("y", 1.0, int(NOW * 1000))])
    assert wal_size(tmp_path / "m.db") > 0
    house.run(final=True)
    assert house.checkpoints == 1 and wal_size(tmp_path / "m.db") == 0


def test_retention_removes_only_old_acknowledged_samples(tmp_path: Path) -> None:
    house, queue, clock = setup(tmp_path)
    old = int((NOW - 7200) * 1000)
    queue.append([Sample("x", float(i), old + i) for i in range(10)])
    queue.append([Sample("x", 99.0, int(NOW * 1000))])
    house.run()
    assert queue.count() == 11  # nothing acknowledged yet: nothing deleted
    claim = queue.next_batch("http://127.0.0.1:9/api", 5, newest_first=False)
    assert claim is not None
    queue.ack("http://127.0.0.1:9/api", claim)
    clock.advance(61)
    house.run()
    assert queue.count() == 6 and house.pruned_total == 5


def test_disk_cap_is_enforced_while_offline_and_counted(tmp_path: Path) -> None:
    house, queue, _ = setup(tmp_path, ", max_size: 1MiB")
    queue.append([Sample("x", float(i), int(NOW * 1000) + i, make_labels(k=str(i % 97))) for i in range(80_000)])
    assert queue.used_bytes() > 1024 * 1024
    house.run()
    assert queue.used_bytes() <= 1024 * 1024
    assert house.dropped_unsent_total == 80_000 - queue.count() > 0
    assert os.path.getsize(tmp_path / "m.db") > 0


def test_coalescing_keeps_one_sample_per_series_per_bucket_of_the_old_unsent_backlog(tmp_path: Path) -> None:
    house, queue, _ = setup(tmp_path, ", coalesce_after: 1d, coalesce_interval: 1m", retention="7d")
    day_ms = 86_400_000
    old_start = int(NOW * 1000) - 2 * day_ms  # two days ago: 10 minutes of 1 s samples, 3 series
    old = [Sample("x", float(i), old_start + i * 1000, make_labels(k=str(k))) for i in range(600) for k in range(3)]
    recent = [Sample("x", 1.0, int(NOW * 1000) - 1000 * i, make_labels(k="0")) for i in range(120)]
    queue.append(old + recent)
    # Acknowledge the first 90 s of the old data: sent samples are never coalesced.
    claim = queue.next_batch("http://127.0.0.1:9/api", 270, newest_first=False)
    assert claim is not None
    queue.ack("http://127.0.0.1:9/api", claim)
    house.run()
    rows = queue.all()
    kept_old = [r for r in rows if r.ts < old_start + 600_000]
    sent = [r for r in kept_old if r.ts < old_start + 90_000]
    assert len(sent) == 270  # untouched
    unsent_old = [r for r in kept_old if r.ts >= old_start + 90_000]
    buckets = {(r.series_id, r.ts - r.ts % 60_000) for r in unsent_old}
    assert len(unsent_old) == len(buckets)  # one per series per minute
    assert len([r for r in rows if r.ts >= int(NOW * 1000) - 200_000]) == 120  # recent data at full resolution
    assert house.coalesced_total == 3 * (600 - 90) - len(unsent_old)


def test_coalescing_is_off_by_default(tmp_path: Path) -> None:
    house, queue, _ = setup(tmp_path)
    queue.append([Sample("x", float(i), int(NOW * 1000) - 3 * 86_400_000 + i * 1000) for i in range(300)])
    house.run()
    assert queue.count() == 300 and house.coalesced_total == 0
