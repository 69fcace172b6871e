"""Rollback across a migration: the copy kept before migrating, schema_compat (a newer schema
that only added things stays readable by the version before), and ``downgrade-db``.

The older readers here are the real migration code stopped at the older version
(``MIGRATIONS[:N]``): what an older release's ``migrate`` does with the database. The
upgrade-then-rollback with a real older release is tests/integration/test_install.py.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from belabox_metrics.cli.collector import main
from belabox_metrics.model import Sample
from belabox_metrics.store.db import connect
from belabox_metrics.store.downgrade import DowngradeError, downgrade
from belabox_metrics.store.lock import AlreadyRunning, ProcessLock
from belabox_metrics.store.migrations import Migration, SchemaTooNew, current_version, migrate
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.store.schema import LATEST_VERSION, MIGRATIONS

DEST = "http://vm:8428/api/v1/import"
ADDITIVE = (
    Migration(1, "t", ("CREATE TABLE t (a INTEGER)",)),
    Migration(2, "t.b", ("ALTER TABLE t ADD COLUMN b TEXT DEFAULT ''", "CREATE INDEX t_b ON t (b)"), additive=True),
)


def samples(start: int, n: int, name: str = "cpu.temperature") -> list[Sample]:
    return [Sample(name, float(i), start + i * 1000, (("zone", "soc"),)) for i in range(n)]


def stored(path: Path) -> set[tuple[str, int, float]]:
    """Every sample in the database, read with plain SQL (any schema since 2)."""
    conn = sqlite3.connect(path)
    try:
        return {(str(n), int(t), float(v)) for n, t, v in conn.execute(
            "SELECT s.name, m.ts, m.value FROM samples m JOIN series s ON s.id = m.series_id")}
    finally:
        conn.close()


def version_of(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return current_version(conn)
    finally:
        conn.close()


def indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()


def send_some(queue: SampleQueue, limit: int) -> None:
    claim = queue.next_batch(DEST, limit)
    assert claim is not None
    queue.ack(DEST, claim)


def schema3_with_data(path: Path) -> None:
    """A database as schema 3 code left it: 4 samples, the first 2 acknowledged."""
    conn = connect(str(path))
    migrate(conn, MIGRATIONS, target=3)
    conn.execute("INSERT INTO series (id, name, labels, value_type) VALUES (1, 'cpu.temperature', '', 0)")
    conn.executemany("INSERT INTO samples (ts, series_id, value) VALUES (?, 1, ?)",
                     [(1000, 40.0), (2000, 41.0), (3000, 42.0), (4000, 43.0)])
    conn.execute("INSERT INTO upload_state (destination, mark_ts, mark_sid, updated_at_ms) VALUES (?, 2000, 1, 0)",
                 (DEST,))
    conn.close()


# -- the copy kept before migrating ------------------------------------------------------

def test_a_migration_keeps_one_copy_of_the_database_as_it_was(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "metrics.db"
    schema3_with_data(db)
    stale = tmp_path / "metrics.db.schema2.bak"
    stale.write_bytes(b"an older copy")
    with caplog.at_level(logging.INFO, logger="belabox_metrics"):
        SampleQueue.open(str(db)).close()
    copy = tmp_path / "metrics.db.schema3.bak"
    assert version_of(copy) == 3 and version_of(db) == LATEST_VERSION
    assert stored(copy) == stored(db) and len(stored(copy)) == 4
    assert not stale.exists()  # one copy at most: the one a rollback to the previous version needs
    assert any("kept a copy" in r.getMessage() for r in caplog.records)
    # No migration, no copy: opening again, or a new database, copies nothing.
    copy.unlink()
    SampleQueue.open(str(db)).close()
    SampleQueue.open(str(tmp_path / "new.db")).close()
    assert sorted(p.name for p in tmp_path.glob("*.bak")) == []


def test_a_copy_that_cannot_be_made_is_a_warning_and_the_migration_still_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "metrics.db"
    schema3_with_data(db)
    (tmp_path / "metrics.db.schema3.bak.partial").mkdir()  # stands for a full disk: the copy fails
    with caplog.at_level(logging.WARNING, logger="belabox_metrics"):
        queue = SampleQueue.open(str(db))
    assert queue.count() == 4 and version_of(db) == LATEST_VERSION
    queue.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("could not keep a copy" in m for m in warned), warned


# -- schema_compat: the version before opens a schema that only added things -------------

def test_code_at_the_version_before_opens_a_schema_that_only_added(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "t.db"))
    migrate(conn, ADDITIVE)
    conn.execute("INSERT INTO t (a, b) VALUES (1, 'x')")
    assert migrate(conn, ADDITIVE[:1]) == []  # the older reader: no refusal, nothing applied
    conn.execute("INSERT INTO t (a) VALUES (2)")  # and it writes as it always did
    assert current_version(conn) == 2 and conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2
    # A schema that changed meaning is still refused.
    changed = (ADDITIVE[0], Migration(2, "t.c", ("ALTER TABLE t ADD COLUMN c TEXT",)))
    other = connect(str(tmp_path / "u.db"))
    migrate(other, changed)
    with pytest.raises(SchemaTooNew):
        migrate(other, changed[:1])


def test_schema_5_only_added_an_index_so_schema_4_code_may_read_and_write_it(tmp_path: Path) -> None:
    db = tmp_path / "metrics.db"
    SampleQueue.open(str(db)).close()
    conn = connect(str(db))
    assert conn.execute("SELECT version, min_reader FROM schema_compat WHERE version = ?",
                        (LATEST_VERSION,)).fetchone() == (5, 4)
    assert migrate(conn, MIGRATIONS[:4]) == []
    with pytest.raises(SchemaTooNew):
        migrate(conn, MIGRATIONS[:3])  # schema 4 changed what schema 3 code knows


def test_schema_3_code_refuses_schema_5_and_names_the_copy(tmp_path: Path) -> None:
    db = tmp_path / "metrics.db"
    schema3_with_data(db)
    SampleQueue.open(str(db)).close()
    with pytest.raises(SchemaTooNew, match=r"metrics\.db\.schema3\.bak.*downgrade-db --schema 3"):
        migrate(connect(str(db)), MIGRATIONS[:3], path=str(db))


# -- downgrade-db --------------------------------------------------------------------------

def test_rollback_5_to_4_keeps_every_sample_and_the_upload_progress(tmp_path: Path) -> None:
    """Schema 5 only added an index: the schema 4 layout is rebuilt from every table; the
    older reader (schema 4 code, which predates schema_compat) opens it; a later upgrade
    migrates it again, and nothing recorded is lost."""
    db = tmp_path / "metrics.db"
    queue = SampleQueue.open(str(db))
    queue.append(samples(1_000, 30))
    send_some(queue, 10)
    queue.append(samples(100_000, 5, "srt.rtt_seconds"))
    before, pending = stored(db), queue.pending_count(DEST)
    queue.close()
    assert pending == 25

    result = downgrade(str(db), 4)
    assert result.action == "rebuilt" and "nothing lost" in result.message
    assert version_of(db) == 4 and "series_by_lane" not in indexes(db)
    assert stored(db) == before
    migrate(connect(str(db)), MIGRATIONS[:4], path=str(db))  # schema 4 code: no refusal
    kept = tmp_path / "metrics.db.schema5.bak"
    assert version_of(kept) == 5 and stored(kept) == before

    again = SampleQueue.open(str(db))  # forward again
    assert current_version(again.conn) == LATEST_VERSION
    assert stored(db) == before and again.pending_count(DEST) == pending
    again.close()
    assert sorted(p.name for p in tmp_path.glob("*.bak")) == ["metrics.db.schema4.bak"]


def test_rollback_over_a_migration_that_changed_meaning_restores_the_copy_plus_what_came_since(
        tmp_path: Path) -> None:
    """Schema 4 rewrote upload progress per lane: a schema 3 reader gets the copy from before
    that migration, with every sample recorded since carried into it, and is refused nothing."""
    db = tmp_path / "metrics.db"
    schema3_with_data(db)
    queue = SampleQueue.open(str(db))  # -> schema 5, keeps metrics.db.schema3.bak
    queue.append(samples(10_000, 6))
    send_some(queue, 3)
    queue.append(samples(50_000, 2, "srt.rtt_seconds"))
    everything = stored(db)
    queue.close()
    assert len(everything) == 12

    result = downgrade(str(db), 3)
    assert result.action == "restored", result
    assert "sent once more" in result.message
    assert version_of(db) == 3 and stored(db) == everything
    migrate(connect(str(db)), MIGRATIONS[:3], path=str(db))  # schema 3 code opens it
    assert not (tmp_path / "metrics.db.schema3.bak").exists()
    assert (tmp_path / "metrics.db.schema5.bak").exists()

    forward = SampleQueue.open(str(db))
    # Progress is the copy's (2 of the first 4 sent): the rest goes (again), nothing is skipped.
    assert forward.count() == 12 and forward.pending_count(DEST) == 10
    forward.close()


def test_no_copy_and_a_schema_that_changed_meaning_is_refused_changing_nothing(tmp_path: Path) -> None:
    db = tmp_path / "metrics.db"
    schema3_with_data(db)
    SampleQueue.open(str(db)).close()
    (tmp_path / "metrics.db.schema3.bak").unlink()
    with pytest.raises(DowngradeError, match=r"no copy from before the migration .*schema3\.bak"):
        downgrade(str(db), 3)
    assert version_of(db) == LATEST_VERSION and len(stored(db)) == 4
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []


def test_a_reader_of_schema_compat_needs_no_change(tmp_path: Path) -> None:
    db = tmp_path / "metrics.db"
    SampleQueue.open(str(db)).close()
    result = downgrade(str(db), 4, reads_compat=True)
    assert result.action == "none" and version_of(db) == LATEST_VERSION
    assert downgrade(str(db), LATEST_VERSION).action == "none"
    assert downgrade(str(tmp_path / "absent.db"), 4).action == "none"


def test_downgrade_refuses_while_an_agent_holds_the_database(tmp_path: Path) -> None:
    db = tmp_path / "metrics.db"
    SampleQueue.open(str(db)).close()
    with ProcessLock(str(db)), pytest.raises(AlreadyRunning):
        downgrade(str(db), 4)
    assert version_of(db) == LATEST_VERSION


def test_downgrade_db_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "metrics.db"
    config = tmp_path / "config.yaml"
    config.write_text(f"device:\n  id: box-1\nstorage:\n  path: {db}\nremote:\n  url: http://127.0.0.1:9/api/v1/import\n"
                      "metrics:\n  - name: cpu.temperature\n    interval: 30s\n")
    queue = SampleQueue.open(str(db))
    queue.append(samples(1_000, 3))
    queue.close()
    assert main(["downgrade-db", "--config", str(config), "--schema", "4"]) == 0
    assert "schema 5 -> 4" in capsys.readouterr().out and version_of(db) == 4
    assert main(["downgrade-db", "--config", str(config), "--schema", "4"]) == 0
    assert "opens it as it is" in capsys.readouterr().out
    assert main(["downgrade-db", "--config", str(config), "--schema", "0"]) == 2
    assert "--schema" in capsys.readouterr().err
