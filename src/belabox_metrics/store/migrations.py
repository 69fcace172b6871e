"""A small migrations framework: ordered steps keyed by schema version.

Each migration runs in its own transaction together with the row that records it, so a
crash mid-migration leaves the database at the previous version, never half-way. Running
``migrate`` again is a no-op. A database whose version is newer than the code knows is
refused: an older binary must not write into a layout it does not understand.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from belabox_metrics.store.db import transaction

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_ms INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    # SQL statements, run in order; or a callable for data migrations.
    statements: tuple[str, ...] = ()
    run: Callable[[sqlite3.Connection], None] | None = None


class SchemaError(Exception):
    pass


class SchemaTooNew(SchemaError):
    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"database {path} has schema version {found}, newer than this program supports "
            f"({supported}). Upgrade belabox-metrics, or point the storage path at another file."
        )
        self.found = found
        self.supported = supported


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute(VERSION_TABLE)
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def check_order(migrations: Sequence[Migration]) -> None:
    expected = list(range(1, len(migrations) + 1))
    if [m.version for m in migrations] != expected:
        raise SchemaError(f"migrations must be numbered 1..{len(migrations)} in order")


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], *, path: str = "database",
            target: int | None = None) -> list[int]:
    """Bring ``conn`` up to ``target`` (default: the latest). Returns the versions applied."""
    check_order(migrations)
    latest = len(migrations) if target is None else target
    found = current_version(conn)
    if found > len(migrations):
        raise SchemaTooNew(path, found, len(migrations))
    applied: list[int] = []
    for migration in migrations[found:latest]:
        with transaction(conn):
            # Re-check inside the write lock: another process may have migrated meanwhile.
            if current_version(conn) >= migration.version:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            if migration.run is not None:
                migration.run(conn)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at_ms) VALUES (?, ?, ?)",
                (migration.version, migration.name, int(time.time() * 1000)),
            )
        applied.append(migration.version)
    return applied
