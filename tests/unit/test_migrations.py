"""The migrations framework: ordered, one transaction each, idempotent, refuses newer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from belabox_metrics.store.db import connect
from belabox_metrics.store.migrations import Migration, SchemaError, SchemaTooNew, current_version, migrate
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
    assert {"metrics", "upload_cursor", "schema_version"} <= tables(conn)
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
