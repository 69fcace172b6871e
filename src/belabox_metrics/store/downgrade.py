"""A rollback across a migration: make the database a newer version migrated readable by the
older version again, losing nothing recorded in between.

Run by the newer version (it knows every older layout: its migrations never change) while
no agent runs (``install.sh --rollback`` stops the service first, then runs
``metrics-collector downgrade-db --schema N`` from the version it leaves). Two ways, chosen
from the migrations between the older schema N and the database's schema V:

- all of them additive (tables, columns with a default, indexes): the older layout is built
  in a new file from the migrations 1..N and every table of it is filled from the database,
  the columns that layout has. Everything is kept, upload progress included.
- otherwise the copy kept before the migration (``<db>.schema<N>.bak``) is the base, and
  what was recorded since is carried into it: series, samples, sessions, dead letters, held
  and late samples, the columns the older layout has. Upload progress stays the copy's: what
  was uploaded after the upgrade is sent once more (VictoriaMetrics with
  ``-dedup.minScrapeInterval`` keeps one of each).

Either way the database as the newer version left it is kept as ``<db>.schema<V>.bak`` (the
one copy there is: older copies are removed), and the result replaces the database
atomically (a rename), so a crash in between leaves one or the other, never neither.
A code version that reads ``schema_compat`` needs none of this when the newer schema names
it as a reader (store/migrations.py): the database is left as it is.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from belabox_metrics.store.db import connect, transaction
from belabox_metrics.store.lock import ProcessLock
from belabox_metrics.store.migrations import (
    COPY_SUFFIX,
    Migration,
    SchemaError,
    copy_path,
    current_version,
    migrate,
    min_reader,
)

# Tables whose layout has not changed since schema 2 and whose rows keep their meaning
# whatever the later migrations did (series ids are never renumbered; checked anyway).
CARRIED = ("series", "samples", "sessions", "dead_letters", "held_samples", "late_samples")
OWN_TABLES = ("schema_version", "schema_compat")


class DowngradeError(SchemaError):
    pass


@dataclass(frozen=True)
class Downgrade:
    action: str          # "none" | "rebuilt" | "restored"
    found: int           # the database's schema before
    schema: int          # the schema it is readable by now
    message: str
    kept: str | None = None   # where the database as it was is kept


def downgrade(path: str, schema: int, *, reads_compat: bool = False,
              migrations: Sequence[Migration] | None = None) -> Downgrade:
    """Make the database at ``path`` readable by code whose newest schema is ``schema``
    (``reads_compat``: that code reads ``schema_compat``). Raises DowngradeError naming why
    not, having changed nothing; AlreadyRunning while an agent holds the database."""
    if migrations is None:
        from belabox_metrics.store.schema import MIGRATIONS

        migrations = MIGRATIONS
    if schema < 1:
        raise DowngradeError(f"--schema must be at least 1, not {schema}")
    if not os.path.exists(path):
        return Downgrade("none", 0, schema, f"no database at {path}: nothing to do")
    with ProcessLock(path):
        conn = connect(path)
        try:
            found = current_version(conn)
            if found > len(migrations):
                raise DowngradeError(f"{path} has schema {found}, newer than this version knows "
                                     f"({len(migrations)}): run downgrade-db of the version that migrated it")
            if found <= schema:
                return Downgrade("none", found, schema,
                                 f"{path} is at schema {found}: code at schema {schema} opens it as it is")
            reader = min_reader(migrations, found)
            if reader <= schema and reads_compat:
                return Downgrade("none", found, schema,
                                 f"{path} is at schema {found}, which only added to schema {reader}: "
                                 f"code at schema {schema} reads and writes it as it is")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        partial = path + ".downgrade.partial"
        _remove(partial, partial + "-wal", partial + "-shm")
        try:
            if reader <= schema:
                action, how = "rebuilt", _rebuild(path, partial, schema, migrations)
            else:
                action, how = "restored", _restore(path, partial, schema, found)
        except BaseException:
            _remove(partial, partial + "-wal", partial + "-shm")
            raise
        kept = copy_path(path, found)
        _remove(kept)
        try:
            os.link(path, kept)  # the database as the newer version left it, kept as is
        except OSError:
            import shutil

            shutil.copyfile(path, kept)
        os.replace(partial, path)
        _fsync_dir(path)
        # The -wal was checkpointed into the file now kept aside; a -shm describes that file.
        _remove(path + "-wal", path + "-shm")
        for other in glob.glob(glob.escape(path) + COPY_SUFFIX.format(version="*")):
            if other != kept:
                _remove(other)
    return Downgrade(action, found, schema,
                     f"{path}: schema {found} -> {schema} ({how}); the schema {found} database is kept as {kept}",
                     kept=kept)


def _rebuild(path: str, partial: str, schema: int, migrations: Sequence[Migration]) -> str:
    """The older layout, built fresh, filled from every table of the database."""
    out = connect(partial)
    try:
        migrate(out, migrations, target=schema)
        out.execute("ATTACH DATABASE ? AS newer", (path,))
        copied = 0
        with transaction(out):
            out.execute("DELETE FROM main.schema_version")
            out.execute("INSERT INTO main.schema_version SELECT * FROM newer.schema_version WHERE version <= ?",
                        (schema,))
            for table in _tables(out, "main"):
                if table in OWN_TABLES:
                    continue
                columns = _columns(out, "main", table)
                if not set(columns) <= set(_columns(out, "newer", table)):
                    raise DowngradeError(f"table {table} lacks columns of schema {schema}: not additive")
                names = ", ".join(f'"{c}"' for c in columns)
                out.execute(f'INSERT INTO main."{table}" ({names}) SELECT {names} FROM newer."{table}"')
                copied += 1
        out.execute("DETACH DATABASE newer")
        out.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        out.close()
    _fsync(partial)
    return f"every table copied into the schema {schema} layout ({copied} tables): nothing lost"


def _restore(path: str, partial: str, schema: int, found: int) -> str:
    """The copy from before the migration, plus what was recorded since."""
    copy = copy_path(path, schema)
    if not os.path.exists(copy):
        raise DowngradeError(
            f"schema {found} is not readable by schema {schema} code and there is no copy from before "
            f"the migration ({copy}). Stay on the newer version, or move {path} aside (its samples not "
            "yet uploaded are then lost to upload) and let the older version start a new database.")
    import shutil

    shutil.copyfile(copy, partial)
    out = connect(partial)
    try:
        if current_version(out) != schema:
            raise DowngradeError(f"{copy} is at schema {current_version(out)}, not {schema}")
        out.execute("ATTACH DATABASE ? AS newer", (path,))
        renumbered = out.execute(
            "SELECT COUNT(*) FROM main.series c JOIN newer.series n ON c.id = n.id "
            "WHERE c.name != n.name OR c.labels != n.labels OR c.value_type != n.value_type").fetchone()[0]
        if renumbered:
            raise DowngradeError(f"series were renumbered between schema {schema} and {found}: cannot carry samples")
        carried: list[str] = []
        with transaction(out):
            for table in CARRIED:
                if table not in _tables(out, "main") or table not in _tables(out, "newer"):
                    continue
                columns = _columns(out, "main", table)
                if not set(columns) <= set(_columns(out, "newer", table)):
                    continue
                names = ", ".join(f'"{c}"' for c in columns)
                before = out.total_changes
                out.execute(f'INSERT OR IGNORE INTO main."{table}" ({names}) SELECT {names} FROM newer."{table}"')
                carried.append(f"{table} +{out.total_changes - before}")
        out.execute("DETACH DATABASE newer")
        out.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        out.close()
    _fsync(partial)
    _remove(copy)
    return (f"the copy from before the migration, with what was recorded since ({', '.join(carried)}); "
            "upload progress as of the migration: what was uploaded since is sent once more")


def _tables(conn: sqlite3.Connection, schema: str) -> list[str]:
    return [str(r[0]) for r in conn.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [str(r[1]) for r in conn.execute(f'PRAGMA {schema}.table_info("{table}")')]


def _remove(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _fsync(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
