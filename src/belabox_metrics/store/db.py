"""Opening a SQLite database the way every part of the project wants it.

WAL lets the collection thread append while the upload thread reads. ``synchronous=FULL``
makes each commit durable (fsync'd) before it returns: a sample is acknowledged to nobody
until it would survive a power cut.

Flash (issue 21): every fsync'd commit rewrites whole pages into the WAL, and the kernel
writes at least one 4 KiB block per commit. The agent's store therefore uses small pages
(``STORE_PAGE_SIZE``, for databases it creates: a round touches a few rightmost leaves, and a
512-byte page costs an eighth of a 4 KiB one in the WAL), checkpoints once the WAL holds
``WAL_AUTOCHECKPOINT_BYTES``, and keeps the WAL file at its size instead of truncating it
(``journal_size_limit``): a WAL that is overwritten in place needs no ext4 journal commit per
fsync, one that grows again after each truncation needs one for every commit.
"""

from __future__ import annotations

import os
import sqlite3

STORE_PAGE_SIZE = 512
WAL_AUTOCHECKPOINT_BYTES = 1024 * 1024
WAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024


def connect(path: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000,
            cache_kib: int = 512, page_size: int | None = None) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path`` in WAL mode, autocommit.

    Transactions are explicit (``with transaction(conn):``) so that each one is exactly
    what the code says, not what the sqlite3 module guesses. ``page_size`` applies to a
    database created by this call (SQLite keeps an existing file's page size).
    """
    if path != ":memory:":
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, mode=0o750, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    if page_size is not None:
        conn.execute(f"PRAGMA page_size={int(page_size)}")  # a no-op once the file has pages
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if path != ":memory:" and str(mode).lower() != "wal":
        conn.close()
        raise sqlite3.OperationalError(f"could not switch {path} to WAL mode (got {mode})")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    # SQLite's default page cache is 2 MiB per connection; the agent holds three and its
    # access is append + short range scans, so 512 KiB each keeps the RSS budget.
    conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
    conn.execute("PRAGMA foreign_keys=ON")
    size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.execute(f"PRAGMA wal_autocheckpoint={max(100, WAL_AUTOCHECKPOINT_BYTES // size)}")
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
    return conn


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
