"""A small migrations framework: ordered steps keyed by schema version.

Each migration runs in its own transaction together with the row that records it, so a
crash mid-migration leaves the database at the previous version, never half-way. Running
``migrate`` again is a no-op.

A database whose version is newer than the code knows is refused, unless the database says
this code may still use it: a migration that only adds (a table, a column with a default,
an index) is marked ``additive``, and every migration records in ``schema_compat`` the
oldest schema version whose code may still read and write the database as it now is
(its "minimum reader"). Code that predates ``schema_compat`` (schema 4 and older) refuses
every newer database: for those, ``keep_copy`` keeps ``<db>.schema<N>.bak`` (a compacted
copy made with ``VACUUM INTO`` just before migrating from N), and ``store/downgrade.py``
turns the newer database back into one that version reads.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from belabox_metrics import logs
from belabox_metrics.store.db import transaction

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_ms INTEGER NOT NULL
)
"""
# One row per schema version reached: the oldest schema version whose code may read and
# write a database at that version. Code that knows this table opens a newer database
# whose row names a version it supports. Its name is the capability probe install.sh uses.
COMPAT_TABLE = """
CREATE TABLE IF NOT EXISTS schema_compat (
    version INTEGER PRIMARY KEY,
    min_reader INTEGER NOT NULL
)
"""
COPY_SUFFIX = ".schema{version}.bak"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    # SQL statements, run in order; or a callable for data migrations.
    statements: tuple[str, ...] = ()
    run: Callable[[sqlite3.Connection], None] | None = None
    # Only adds tables, columns with a default or indexes, none of which code at the
    # previous version must fill in for this version's code to be right: that code may
    # still read and write the database (its minimum reader stays where it was).
    additive: bool = False


class SchemaError(Exception):
    pass


class SchemaTooNew(SchemaError):
    def __init__(self, path: str, found: int, supported: int) -> None:
        copy = copy_path(path, supported)
        hint = "Upgrade belabox-metrics, or point the storage path at another file."
        if os.path.exists(copy):
            hint = (f"A copy from before the migration is {copy}: the newer version's "
                    f"`metrics-collector downgrade-db --schema {supported}` (run by "
                    "`install.sh --rollback`) makes the database readable here again, "
                    "keeping what was recorded since; or upgrade belabox-metrics.")
        super().__init__(
            f"database {path} has schema version {found}, newer than this program supports "
            f"({supported}). {hint}"
        )
        self.found = found
        self.supported = supported


def copy_path(path: str, version: int) -> str:
    """Where the copy of ``path`` taken before migrating away from ``version`` lives."""
    return path + COPY_SUFFIX.format(version=version)


def min_reader(migrations: Sequence[Migration], version: int) -> int:
    """The oldest schema version whose code may read and write a database at ``version``:
    step back over every additive migration."""
    reader = version
    while reader > 0 and migrations[reader - 1].additive:
        reader -= 1
    return max(reader, 1) if version else 0


def recorded_min_reader(conn: sqlite3.Connection, version: int) -> int | None:
    """What the database says its minimum reader is (None: it does not say)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_compat'").fetchone()
    if not exists:
        return None
    row = conn.execute("SELECT min_reader FROM schema_compat WHERE version = ?", (version,)).fetchone()
    return int(row[0]) if row else None


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute(VERSION_TABLE)
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def check_order(migrations: Sequence[Migration]) -> None:
    expected = list(range(1, len(migrations) + 1))
    if [m.version for m in migrations] != expected:
        raise SchemaError(f"migrations must be numbered 1..{len(migrations)} in order")


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], *, path: str = "database",
            target: int | None = None, keep_copy: bool = False) -> list[int]:
    """Bring ``conn`` up to ``target`` (default: the latest). Returns the versions applied.

    ``keep_copy``: before migrating a database that holds data (version >= 1), keep a copy
    of it as ``<path>.schema<version>.bak`` for a rollback (see ``keep_copy_before``)."""
    check_order(migrations)
    latest = len(migrations) if target is None else target
    found = current_version(conn)
    if found > len(migrations):
        reader = recorded_min_reader(conn, found)
        if reader is not None and reader <= len(migrations):
            return []  # the newer schema only added things this code does not need
        raise SchemaTooNew(path, found, len(migrations))
    if keep_copy and 0 < found < latest and path != ":memory:":
        keep_copy_before(conn, path, found)
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
            record_min_reader(conn, migration.version, min_reader(migrations, migration.version))
        applied.append(migration.version)
    version = current_version(conn)
    if version and version <= len(migrations) and recorded_min_reader(conn, version) is None:
        # Migrated by code older than schema_compat: say it once now (not possible on a
        # read-only database, which a reader such as `status` may open: it stays unsaid).
        with contextlib.suppress(sqlite3.OperationalError), transaction(conn):
            record_min_reader(conn, version, min_reader(migrations, version))
    return applied


def record_min_reader(conn: sqlite3.Connection, version: int, reader: int) -> None:
    conn.execute(COMPAT_TABLE)
    conn.execute("INSERT OR REPLACE INTO schema_compat (version, min_reader) VALUES (?, ?)", (version, reader))


def keep_copy_before(conn: sqlite3.Connection, path: str, version: int) -> str | None:
    """Copy the database (compacted, ``VACUUM INTO``) to ``<path>.schema<version>.bak``
    before it is migrated away from ``version``; remove every older copy of that kind.

    At most one copy exists: the one a rollback to the version before the last migration
    needs (install.sh keeps two versions). It costs about the database's size on disk (the
    copy is compacted: free pages are not copied) and the time to read and write it once
    (~1 s per 100 MB on an SD card is optimistic; a 200 MB database may take several
    seconds). A copy that cannot be made (disk full) is a WARNING: collection matters more
    than a rollback, so the migration still runs."""
    log = logs.get("storage")
    target = copy_path(path, version)
    partial = target + ".partial"
    started = time.monotonic()
    try:
        if os.path.exists(partial):
            os.unlink(partial)
        conn.execute("VACUUM INTO ?", (partial,))
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        logs.event(log, logging.WARNING,
                   "could not keep a copy of the database before migrating it: a rollback to "
                   "the previous version will need the database moved aside (its unsent samples "
                   "are then lost to upload); free some space to keep one next time",
                   path=path, copy=target, schema=version, error=str(exc))
        return None
    for old in glob.glob(glob.escape(path) + COPY_SUFFIX.format(version="*")):
        if old != target:
            with contextlib.suppress(OSError):
                os.unlink(old)
    logs.event(log, logging.INFO, "kept a copy of the database before migrating it, for a rollback",
               path=path, copy=target, schema=version, bytes=os.path.getsize(target),
               seconds=round(time.monotonic() - started, 3))
    return target

