"""Retention: what may leave the database, by the one sent rule (store/progress.py):
pruning what every destination acknowledged, coalescing an old unsent backlog when asked
to, and the size cap (which drops the oldest whatever they are, and counts what was unsent)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from belabox_metrics.store.progress import (
    AT_OR_BELOW_MARK_SQL,
    IN_LANE_SQL,
    NOT_LATE_ANYWHERE_SQL,
    Key,
    sent_everywhere,
)

if TYPE_CHECKING:
    from belabox_metrics.store.queue import SampleQueue



def prune_sent(queue: SampleQueue, destinations: Sequence[str], older_than_ms: int) -> int:
    """Delete samples older than ``older_than_ms`` that every destination acknowledged."""
    if not destinations:
        return 0
    with queue._write():
        before = queue.conn.total_changes
        for lane in queue.lanes_in_use():
            mark = min(queue.state(d, lane).mark for d in destinations)
            cutoff: Key = min(mark, (older_than_ms, -1))
            # At or below every destination's mark and late for none: sent everywhere.
            queue.conn.execute(
                f"DELETE FROM samples WHERE {AT_OR_BELOW_MARK_SQL} AND {IN_LANE_SQL} AND {NOT_LATE_ANYWHERE_SQL}",
                (*cutoff, lane),
            )
        return queue.conn.total_changes - before


def coalesce_unsent(queue: SampleQueue, destinations: Sequence[str], older_than_ms: int, bucket_ms: int,
                    max_rows: int = 200_000) -> int:
    """Downsample the backlog: among samples older than ``older_than_ms`` that no
    destination has acknowledged, keep the first sample of each series in each
    ``bucket_ms`` bucket and delete the rest. One ordered pass over at most ``max_rows``
    rows per call. Returns how many were deleted. Off unless configured: it trades
    resolution for uplink bytes after a long offline period."""
    if not destinations or bucket_ms <= 0:
        return 0
    doomed: list[tuple[int, int]] = []
    for lane in queue.lanes_in_use():
        states = [queue.state(d, lane) for d in destinations]
        lower = max(st.highest for st in states)
        upper_ts = older_than_ms
        for st in states:
            if st.fresh_lo is not None:
                upper_ts = min(upper_ts, st.fresh_lo[0])
        kept_bucket: dict[int, int] = {}
        for ts, sid in queue.conn.execute(
                f"SELECT ts, series_id FROM samples WHERE (ts, series_id) > (?, ?) AND ts < ? AND {IN_LANE_SQL} "
                "ORDER BY ts, series_id LIMIT ?", (*lower, upper_ts, lane, max_rows)):
            bucket = ts - ts % bucket_ms
            if kept_bucket.get(sid) == bucket:
                doomed.append((ts, sid))
            else:
                kept_bucket[sid] = bucket
    if doomed:
        with queue._write():
            queue.conn.executemany("DELETE FROM samples WHERE ts = ? AND series_id = ?", doomed)
    return len(doomed)


def used_bytes(queue: SampleQueue) -> int:
    pages = int(queue.conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(queue.conn.execute("PRAGMA freelist_count").fetchone()[0])
    size = int(queue.conn.execute("PRAGMA page_size").fetchone()[0])
    return (pages - free) * size


def enforce_max_size(queue: SampleQueue, max_bytes: int, destinations: Sequence[str], step: int = 5000) -> int:
    """While the database holds more than ``max_bytes``, delete the oldest samples.
    Returns how many of the deleted samples had not been sent to every destination."""
    dropped_unsent = 0
    for _ in range(1000):  # bounded: each round deletes `step` samples
        if queue.used_bytes() <= max_bytes:
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
