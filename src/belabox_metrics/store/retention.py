"""Retention: what may leave the database, by the one sent rule (store/progress.py):
pruning what every destination acknowledged, coalescing an old unsent backlog when asked
to, and the size cap (which drops the oldest whatever they are, and counts what was unsent)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from belabox_metrics.store.progress import (
    IN_LANE_SQL,
    Key,
    sent_everywhere,
    sent_everywhere_sql,
    unsent_everywhere,
)

if TYPE_CHECKING:
    from belabox_metrics.store.outbox import Outbox



def prune_sent(queue: Outbox, destinations: Sequence[str], older_than_ms: int) -> int:
    """Delete samples older than ``older_than_ms`` that every destination acknowledged."""
    if not destinations:
        return 0
    with queue._write():
        before = queue.conn.total_changes
        for lane in queue.lanes_in_use():
            sent, params = sent_everywhere_sql([queue.state(d, lane) for d in destinations], older_than_ms)
            queue.conn.execute(f"DELETE FROM samples WHERE {sent} AND {IN_LANE_SQL}", (*params, lane))
        return queue.conn.total_changes - before


def coalesce_unsent(queue: Outbox, destinations: Sequence[str], older_than_ms: int, bucket_ms: int,
                    max_rows: int = 200_000) -> int:
    """Downsample the backlog: among samples older than ``older_than_ms`` that no
    destination has acknowledged (the one sent rule: ``unsent_everywhere``), keep the first sample of each series in each
    ``bucket_ms`` bucket and delete the rest. One ordered pass over at most ``max_rows``
    rows per call. Returns how many were deleted. Off unless configured: it trades
    resolution for uplink bytes after a long offline period."""
    if not destinations or bucket_ms <= 0:
        return 0
    doomed: list[tuple[int, int]] = []
    for lane in queue.lanes_in_use():
        kept_bucket: dict[int, int] = {}
        room = max_rows
        for unsent in unsent_everywhere(queue.state(d, lane) for d in destinations):
            where, params = unsent.sql()
            for ts, sid in queue.conn.execute(
                    f"SELECT ts, series_id FROM samples WHERE {where} AND ts < ? AND {IN_LANE_SQL} "
                    "ORDER BY ts, series_id LIMIT ?", (*params, older_than_ms, lane, room)):
                room -= 1
                bucket = ts - ts % bucket_ms
                if kept_bucket.get(sid) == bucket:
                    doomed.append((ts, sid))
                else:
                    kept_bucket[sid] = bucket
            if room <= 0:
                break
    if doomed:
        with queue._write():
            queue.conn.executemany("DELETE FROM samples WHERE ts = ? AND series_id = ?", doomed)
    return len(doomed)


def used_bytes(queue: Outbox) -> int:
    pages = int(queue.conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(queue.conn.execute("PRAGMA freelist_count").fetchone()[0])
    size = int(queue.conn.execute("PRAGMA page_size").fetchone()[0])
    return (pages - free) * size


def enforce_max_size(queue: Outbox, max_bytes: int, destinations: Sequence[str], step: int = 5000) -> int:
    """While the database holds more than ``max_bytes``, delete the oldest samples.
    Returns how many of the deleted samples had not been sent to every destination."""
    dropped_unsent = 0
    for _ in range(1000):  # bounded: each round deletes `step` samples
        if used_bytes(queue) <= max_bytes:
            break
        with queue._write():
            rows = queue.conn.execute(
                "SELECT ts, series_id FROM samples ORDER BY ts, series_id LIMIT ?", (step,)
            ).fetchall()
            if not rows:
                break
            last: Key = (int(rows[-1][0]), int(rows[-1][1]))
            progress = [queue.progress(d) for d in destinations]
            dropped_unsent += sum(1 for ts, sid in rows if not sent_everywhere(progress, (ts, sid), queue.lane_of(sid)))
            queue.conn.execute("DELETE FROM samples WHERE (ts, series_id) <= (?, ?)", last)
            queue.conn.execute("DELETE FROM late_samples WHERE (ts, series_id) <= (?, ?)", last)
    return dropped_unsent
