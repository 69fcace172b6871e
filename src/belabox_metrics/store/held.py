"""Samples held while the wall clock cannot be trusted (runtime/clock_gate.py), with their
monotonic time, and released re-stamped once it can."""

from __future__ import annotations

from collections.abc import Iterable

from belabox_metrics.model import Sample
from belabox_metrics.store.outbox import Outbox, insert_rows


def hold(queue: Outbox, samples: Iterable[Sample], boot_id: str, wall_minus_monotonic_ms: int) -> int:
    """Keep samples whose wall-clock stamp cannot be trusted, with their monotonic time."""
    with queue._write():
        rows = [(boot_id, ts - wall_minus_monotonic_ms, sid, value, ts)
                for ts, sid, value in queue._rows_for(samples)]
        before = queue.conn.total_changes
        queue.conn.executemany(
            "INSERT OR IGNORE INTO held_samples (boot_id, monotonic_ms, series_id, value, wall_ms) "
            "VALUES (?, ?, ?, ?, ?)", rows)
        return queue.conn.total_changes - before


def release_held(queue: Outbox, boot_id: str, wall_minus_monotonic_ms: int) -> int:
    """Re-stamp this boot's held samples from monotonic time (now that the wall clock is
    trusted) and store them as ordinary samples. Returns how many."""
    with queue._write():
        rows = [(mono + wall_minus_monotonic_ms, sid, value) for mono, sid, value in queue.conn.execute(
            "SELECT monotonic_ms, series_id, value FROM held_samples WHERE boot_id = ?", (boot_id,))]
        if not rows:
            return 0
        late = queue._late_on_append(rows)
        insert_rows(queue.conn, rows)
        queue._record_late(late)
        queue.conn.execute("DELETE FROM held_samples WHERE boot_id = ?", (boot_id,))
    return len(rows)


def held_count(queue: Outbox) -> int:
    return int(queue.conn.execute("SELECT COUNT(*) FROM held_samples").fetchone()[0])
