"""The agent's schema, one migration per version. Never edit a released migration: add one."""

from __future__ import annotations

import sqlite3
import time

from belabox_metrics.store.migrations import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "milestone-1: metrics table and upload cursor",
        (
            # The seed's Milestone 1 table, plus labels (canonical JSON, '' for none) so a
            # mock sample can carry source="mock" and never pass for real data.
            """CREATE TABLE metrics (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                timestamp INTEGER NOT NULL,       -- milliseconds since the Unix epoch, UTC
                metric_name TEXT NOT NULL,
                metric_value REAL,
                device_id TEXT,
                labels TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX idx_timestamp ON metrics(timestamp)",
            # Upload progress per destination: every row with id <= last_id was accepted
            # by that destination. Moving it is the acknowledgement.
            """CREATE TABLE upload_cursor (
                destination TEXT PRIMARY KEY,
                last_id INTEGER NOT NULL,
                updated_at_ms INTEGER NOT NULL
            )""",
        ),
    ),
)


def _v2_move_data(conn: sqlite3.Connection) -> None:
    """Copy v1 rows into series + samples and turn each v1 id cursor into a mark.

    A v1 destination had acknowledged every row with id <= last_id. In v2 the mark is the
    largest (timestamp, series) key among those rows; unacknowledged rows whose key is at
    or below the mark (v1 ordered by insertion, not time) go to ``late_samples`` so they are
    still sent.
    """
    conn.execute(
        "INSERT OR IGNORE INTO series (name, labels, value_type) "
        "SELECT DISTINCT metric_name, labels, 0 FROM metrics"
    )
    conn.execute(
        "INSERT OR IGNORE INTO samples (ts, series_id, value) "
        "SELECT m.timestamp, s.id, m.metric_value FROM metrics m "
        "JOIN series s ON s.name = m.metric_name AND s.labels = m.labels AND s.value_type = 0 "
        "ORDER BY m.id"
    )
    cursors = conn.execute("SELECT destination, last_id FROM upload_cursor").fetchall()
    for destination, last_id in cursors:
        mark = conn.execute(
            "SELECT m.timestamp, s.id FROM metrics m "
            "JOIN series s ON s.name = m.metric_name AND s.labels = m.labels AND s.value_type = 0 "
            "WHERE m.id <= ? ORDER BY m.timestamp DESC, s.id DESC LIMIT 1",
            (last_id,),
        ).fetchone()
        if mark is None:
            continue
        conn.execute(
            "INSERT INTO upload_state (destination, mark_ts, mark_sid, updated_at_ms) VALUES (?, ?, ?, ?)",
            (destination, mark[0], mark[1], int(time.time() * 1000)),
        )
        conn.execute(
            "INSERT OR IGNORE INTO late_samples (destination, ts, series_id) "
            "SELECT ?, m.timestamp, s.id FROM metrics m "
            "JOIN series s ON s.name = m.metric_name AND s.labels = m.labels AND s.value_type = 0 "
            "WHERE m.id > ? AND (m.timestamp, s.id) <= (?, ?)",
            (destination, last_id, mark[0], mark[1]),
        )
    conn.execute("DROP TABLE upload_cursor")
    conn.execute("DROP TABLE metrics")


MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        2,
        "compact store: series + samples keyed by (ts, series), marks, late, dead letters, sessions",
        (
            # One row per series; value_type 0 numeric, 1 text (text is kept locally only).
            # The dedup key of a sample is (series, timestamp): series already encodes name,
            # canonically ordered labels and value type.
            """CREATE TABLE series (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                labels TEXT NOT NULL,
                value_type INTEGER NOT NULL DEFAULT 0,
                UNIQUE (name, labels, value_type)
            )""",
            # ~25 bytes per sample: no rowid, no second index, the key is the dedup key and
            # the upload order. `value` holds a REAL, or TEXT for text series.
            """CREATE TABLE samples (
                ts INTEGER NOT NULL,          -- milliseconds since the Unix epoch, UTC
                series_id INTEGER NOT NULL,
                value,
                PRIMARY KEY (ts, series_id)
            ) WITHOUT ROWID""",
            # Upload progress per destination: everything with key <= mark was accepted, and
            # so was [fresh_lo, fresh_hi] (the newest data, sent ahead of a backlog).
            """CREATE TABLE upload_state (
                destination TEXT PRIMARY KEY,
                mark_ts INTEGER NOT NULL,
                mark_sid INTEGER NOT NULL,
                fresh_lo_ts INTEGER, fresh_lo_sid INTEGER,
                fresh_hi_ts INTEGER, fresh_hi_sid INTEGER,
                updated_at_ms INTEGER NOT NULL
            )""",
            # Samples stored with a key inside an already-acknowledged range (re-stamped after
            # a clock sync, or late from a source): sent before anything else.
            """CREATE TABLE late_samples (
                destination TEXT NOT NULL,
                ts INTEGER NOT NULL,
                series_id INTEGER NOT NULL,
                PRIMARY KEY (destination, ts, series_id)
            ) WITHOUT ROWID""",
            # Samples a destination will never accept (non-finite, outside its time window,
            # refused with a permanent 4xx): kept here with the reason instead of vanishing.
            """CREATE TABLE dead_letters (
                id INTEGER PRIMARY KEY,
                destination TEXT NOT NULL,
                ts INTEGER NOT NULL,
                series_id INTEGER NOT NULL,
                value,
                reason TEXT NOT NULL,
                created_at_ms INTEGER NOT NULL
            )""",
            # One row per agent start: what re-stamping and audits need to know.
            """CREATE TABLE sessions (
                id INTEGER PRIMARY KEY,
                boot_id TEXT NOT NULL,
                started_at_ms INTEGER NOT NULL,
                monotonic_at_start REAL NOT NULL,
                version TEXT NOT NULL
            )""",
        ),
        run=_v2_move_data,
    ),
    Migration(
        3,
        "held samples: stamped while the wall clock could not be trusted",
        (
            # Kept with what re-stamping needs: the boot they belong to and the monotonic
            # clock (CLOCK_MONOTONIC, ms) at collection. Moved into `samples` with a real
            # timestamp once the clock is trusted again in the same boot.
            """CREATE TABLE held_samples (
                boot_id TEXT NOT NULL,
                monotonic_ms INTEGER NOT NULL,
                series_id INTEGER NOT NULL,
                value,
                wall_ms INTEGER NOT NULL,      -- what the untrusted clock said
                PRIMARY KEY (boot_id, monotonic_ms, series_id)
            ) WITHOUT ROWID""",
        ),
    ),
)

MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        4,
        "priority lanes: a class per series, upload progress per (destination, class)",
        (
            # The upload lane (priority class, 0 = P0 ... 3 = P3) of each series, chosen by
            # name from the config when the series is first stored. Kept here, not recomputed,
            # because the meaning of the marks below depends on it: a series changes lane only
            # when that cannot change what counts as sent (store/queue.py: apply_classes).
            "ALTER TABLE series ADD COLUMN lane INTEGER NOT NULL DEFAULT 2",
            """CREATE TABLE upload_lanes (
                destination TEXT NOT NULL,
                lane INTEGER NOT NULL,
                mark_ts INTEGER NOT NULL,
                mark_sid INTEGER NOT NULL,
                fresh_lo_ts INTEGER, fresh_lo_sid INTEGER,
                fresh_hi_ts INTEGER, fresh_hi_sid INTEGER,
                updated_at_ms INTEGER NOT NULL,
                PRIMARY KEY (destination, lane)
            )""",
            # Before lanes, progress did not depend on the series: every lane starts equal.
            """INSERT INTO upload_lanes SELECT u.destination, l.lane, u.mark_ts, u.mark_sid,
                   u.fresh_lo_ts, u.fresh_lo_sid, u.fresh_hi_ts, u.fresh_hi_sid, u.updated_at_ms
               FROM upload_state u CROSS JOIN
                   (SELECT 0 AS lane UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) l""",
            "DROP TABLE upload_state",
            "ALTER TABLE upload_lanes RENAME TO upload_state",
        ),
    ),
)

MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        5,
        "series indexed by lane",
        (
            # Every claim, acknowledgement and pending count filters samples by lane
            # (``series_id IN (SELECT id FROM series WHERE lane = ?)``). Without this index each
            # of those statements scans the whole series table, names and labels included:
            # ~0.5 ms per statement at 7,000 series, most of a claim's cost at that scale.
            "CREATE INDEX series_by_lane ON series (lane, id)",
        ),
        # Schema 4 code reads and writes it as is: SQLite keeps the index current for it.
        additive=True,
    ),
)

LATEST_VERSION = len(MIGRATIONS)
