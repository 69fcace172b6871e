"""The migrations framework: ordered, one transaction each, idempotent, refuses newer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from belabox_metrics.model import Sample
from belabox_metrics.store.db import connect
from belabox_metrics.store.migrations import Migration, SchemaError, SchemaTooNew, current_version, migrate
from belabox_metrics.store.queue import _IN_LANE, SampleQueue, SeriesLanes
from belabox_metrics.store.schema import LATEST_VERSION, MIGRATIONS

STEPS = (
    Migration(1, "t", ("CREATE TABLE t (a INTEGER)",)),
    Migration(2, "t.b", ("ALTER TABLE t ADD COLUMN b TEXT",)),
)


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_fresh_database_gets_latest_schema(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "m.db"))
    assert migrate(conn, MIGRATIONS) == list(range(1, LATEST_VERSION + 1))
    assert current_version(conn) == LATEST_VERSION
    assert {"series", "samples", "upload_state", "late_samples", "dead_letters", "sessions",
            "schema_version"} <= tables(conn)
    assert not {"metrics", "upload_cursor"} & tables(conn)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rerun_is_a_no_op(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    migrate(connect(path), MIGRATIONS)
    conn = connect(path)
    assert migrate(conn, MIGRATIONS) == []
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == LATEST_VERSION


def test_steps_apply_in_order_and_keep_data(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "m.db"))
    assert migrate(conn, STEPS, target=1) == [1]
    conn.execute("INSERT INTO t (a) VALUES (7)")
    assert migrate(conn, STEPS) == [2]
    assert conn.execute("SELECT a, b FROM t").fetchall() == [(7, None)]


def test_failed_migration_rolls_back_whole_step(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "m.db"))
    broken = (*STEPS, Migration(3, "broken", ("CREATE TABLE u (x INTEGER)", "THIS IS NOT SQL")))
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, broken)
    assert current_version(conn) == 2  # steps 1 and 2 committed, 3 not at all
    assert "u" not in tables(conn)


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    conn = connect(path)
    migrate(conn, STEPS)
    with pytest.raises(SchemaTooNew, match="newer than this program supports") as caught:
        migrate(conn, STEPS[:1], path=path)
    assert caught.value.found == 2 and caught.value.supported == 1


def test_misnumbered_migrations_are_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError):
        migrate(connect(str(tmp_path / "m.db")), (STEPS[1], STEPS[0]))


def test_v1_to_latest_with_data_keeps_every_sample_and_the_upload_progress(tmp_path: Path) -> None:
    """A populated Milestone 1 database: rows inserted out of time order, an id cursor in the
    middle. After migrating, every sample is there once, the acknowledged ones count as sent,
    and the unacknowledged ones (including one older than the new mark) are pending."""
    path = str(tmp_path / "m.db")
    conn = connect(path)
    migrate(conn, MIGRATIONS, target=1)
    rows = [  # (id order) timestamp, name, value, labels
        (1000, "cpu.temperature", 40.0, '{"zone":"soc"}'),
        (2000, "cpu.temperature", 41.0, '{"zone":"soc"}'),
        (1500, "srt.packet_loss", 0.5, '{"source":"mock"}'),
        (3000, "cpu.temperature", 42.0, '{"zone":"soc"}'),
        (1200, "srt.packet_loss", 0.7, '{"source":"mock"}'),   # after the cursor, older than the mark
        (4000, "cpu.temperature", 43.0, '{"zone":"soc"}'),
        (4000, "cpu.temperature", 43.0, '{"zone":"soc"}'),     # a v1 duplicate row
    ]
    conn.executemany("INSERT INTO metrics (timestamp, metric_name, metric_value, device_id, labels) "
                     "VALUES (?, ?, ?, 'box', ?)", rows)
    conn.execute("INSERT INTO upload_cursor (destination, last_id, updated_at_ms) VALUES ('http://r/api', 4, 0)")
    conn.close()

    queue = SampleQueue.open(path)
    assert current_version(queue.conn) == LATEST_VERSION
    stored = {(r.sample.name, r.ts, r.sample.value) for r in queue.all()}
    assert stored == {(n, t, v) for t, n, v, _ in rows} and queue.count() == 6  # the duplicate folded
    assert queue.pending_count("http://r/api") == 2
    claim = queue.next_batch("http://r/api", 10)
    assert claim is not None and claim.region == "late"
    assert [(r.ts, r.sample.value) for r in claim.rows] == [(1200, 0.7)]
    queue.ack("http://r/api", claim)
    claim = queue.next_batch("http://r/api", 10)
    assert claim is not None and [(r.ts, r.sample.value) for r in claim.rows] == [(4000, 43.0)]
    assert dict(queue.all()[0].sample.labels) == {"zone": "soc"}
    # Idempotent: opening again changes nothing.
    queue.close()
    again = SampleQueue.open(path)
    assert again.count() == 6 and again.pending_count("http://r/api") == 1  # the late one was acked


def test_lane_filters_read_the_lane_index_not_every_series(tmp_path: Path) -> None:
    """Claims, acknowledgements and pending counts select a lane's samples through
    ``series_id IN (SELECT id FROM series WHERE lane = ?)``; that must be an index range, not a
    scan of every series with its names and labels (0.5 ms per statement at 7,000 series)."""
    queue = SampleQueue.open(str(tmp_path / "m.db"), lanes=SeriesLanes(lambda name: 3 if name.endswith("_total") else 0))
    plan = " | ".join(str(r[3]) for r in queue.conn.execute(
        f"EXPLAIN QUERY PLAN SELECT ts FROM samples WHERE (ts, series_id) > (?, ?) AND {_IN_LANE}", (0, 0, 1)))
    assert "USING COVERING INDEX series_by_lane (lane=?)" in plan and "SCAN series" not in plan
    assert queue.lanes_in_use() == []
    queue.append([Sample("disk.reads_total", 1.0, 1_000, ()), Sample("srt.rtt_seconds", 0.1, 1_000, ())])
    assert queue.lanes_in_use() == [0, 3]
