"""The agent's schema, one migration per version. Never edit a released migration: add one."""

from __future__ import annotations

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

LATEST_VERSION = len(MIGRATIONS)
