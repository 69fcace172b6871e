"""Read-only views of the queue: pending counts per lane, the oldest pending sample, recent
samples with their sent flag (the one rule, store/progress.py), the newest per series, dead
letters, and the figures health and `status` show."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from belabox_metrics.store.progress import IN_LANE_SQL, UploadState

if TYPE_CHECKING:
    from belabox_metrics.store.outbox import Outbox
    from belabox_metrics.store.series import Row


class DeadLetter(NamedTuple):
    """A sample set aside as refused, with the destination's reason."""
    id: int
    destination: str
    row: Row
    reason: str
    created_at_ms: int


@dataclass(frozen=True)
class QueueStats:
    samples: int  # -1 when not counted (stats(totals=False))
    series: int
    pending: int
    pending_by_class: dict[str, int]  # lanes holding series, late samples counted in their lane
    oldest_pending_ms: int | None
    dead_letters: int
    db_bytes: int
    wal_bytes: int


def lane_name(lane: int) -> str:
    return f"P{lane}"


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def pending_by_lane(queue: Outbox, destination: str, states: dict[int, UploadState] | None = None) -> dict[int, int]:
    """Samples not yet acknowledged by ``destination``, per lane holding series."""
    pending: dict[int, int] = {}
    late_by_lane = dict(queue.conn.execute(  # one query for every lane's late rows
        "SELECT r.lane, COUNT(*) FROM late_samples l JOIN series r ON r.id = l.series_id "
        "WHERE l.destination = ? GROUP BY r.lane", (destination,)).fetchall())
    for lane, state in (states if states is not None else queue._states_in_use(destination)).items():
        # The sent rule counted, not listed: the rows in the lane's unsent ranges, and its
        # late rows (which lie inside the acknowledged ranges, so none is counted twice).
        unsent = 0
        for keys in state.unsent_ranges:
            where, params = keys.sql()
            unsent += int(queue.conn.execute(
                f"SELECT COUNT(*) FROM samples WHERE {where} AND {IN_LANE_SQL}", (*params, lane)).fetchone()[0])
        pending[lane] = unsent + int(late_by_lane.get(lane, 0))
    return pending


def pending_count(queue: Outbox, destination: str) -> int:
    return sum(pending_by_lane(queue, destination).values())


def oldest_pending_ms(queue: Outbox, destination: str, states: dict[int, UploadState] | None = None) -> int | None:
    row = queue.conn.execute("SELECT MIN(ts) FROM late_samples WHERE destination = ?", (destination,)).fetchone()
    candidates = [int(row[0])] if row and row[0] is not None else []
    for lane, state in (states if states is not None else queue._states_in_use(destination)).items():
        for keys in state.unsent_ranges:
            where, params = keys.sql()
            first = queue.conn.execute(
                f"SELECT ts FROM samples WHERE {where} AND {IN_LANE_SQL} ORDER BY ts, series_id LIMIT 1",
                (*params, lane)).fetchone()
            if first is not None:
                candidates.append(int(first[0]))
                break  # ascending ranges: the first with a row holds the oldest
    return min(candidates) if candidates else None


def last_acknowledged_ms(queue: Outbox, destination: str) -> int | None:
    """When ``destination`` last acknowledged anything (wall clock, ms), None if never."""
    row = queue.conn.execute("SELECT MAX(updated_at_ms) FROM upload_state WHERE destination = ?",
                            (destination,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def count(queue: Outbox) -> int:
    return int(queue.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])


def recent(queue: Outbox, metric: str | None = None, last: int = 20,
           destination: str | None = None) -> list[tuple[Row, bool]]:
    """The newest ``last`` samples (optionally of one metric), oldest first, each with
    whether ``destination`` has acknowledged it."""
    if metric is None:
        raw = queue.conn.execute(
            "SELECT ts, series_id, value FROM samples ORDER BY ts DESC, series_id DESC LIMIT ?", (last,)
        ).fetchall()
    else:
        raw = queue.conn.execute(
            "SELECT s.ts, s.series_id, s.value FROM samples s JOIN series r ON r.id = s.series_id "
            "WHERE r.name = ? ORDER BY s.ts DESC, s.series_id DESC LIMIT ?", (metric, last)
        ).fetchall()
    progress = queue.progress(destination) if destination else None
    out = []
    for ts, sid, value in reversed(raw):
        row = queue._row(ts, sid, value)
        sent = progress is not None and progress.is_sent(row.key, queue.lane_of(sid))
        out.append((row, sent))
    return out


def latest_per_series(queue: Outbox, since_ms: int) -> list[Row]:
    """The newest sample of every series seen since ``since_ms`` (one range scan)."""
    rows = queue.conn.execute(
        "SELECT MAX(ts), series_id, value FROM samples WHERE ts >= ? GROUP BY series_id", (since_ms,)
    ).fetchall()
    return sorted((queue._row(ts, sid, value) for ts, sid, value in rows),
                  key=lambda r: (r.sample.name, r.sample.labels))


def all_rows(queue: Outbox) -> list[Row]:
    return [queue._row(*r) for r in queue.conn.execute("SELECT ts, series_id, value FROM samples ORDER BY ts, series_id")]


def dead_letters(queue: Outbox, destination: str | None = None) -> list[tuple[Row, str]]:
    query = "SELECT ts, series_id, value, reason FROM dead_letters"
    params: tuple[object, ...] = ()
    if destination is not None:
        query += " WHERE destination = ?"
        params = (destination,)
    return [(queue._row(ts, sid, value), str(reason))
            for ts, sid, value, reason in queue.conn.execute(query + " ORDER BY id", params)]


def dead_filter(destination: str | None, since_ms: int | None,
                metric: str | None) -> tuple[str, tuple[object, ...]]:
    """The WHERE clause (and its parameters) choosing dead letters."""
    clauses: list[str] = []
    params: list[object] = []
    if destination is not None:
        clauses.append("destination = ?")
        params.append(destination)
    if since_ms is not None:
        clauses.append("created_at_ms >= ?")
        params.append(since_ms)
    if metric is not None:
        clauses.append("series_id IN (SELECT id FROM series WHERE name = ?)")
        params.append(metric)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def dead_letter_entries(queue: Outbox, destination: str | None = None, since_ms: int | None = None,
                        metric: str | None = None) -> list[DeadLetter]:
    """Dead letters with their id, destination and when they were set aside, oldest first."""
    where, params = dead_filter(destination, since_ms, metric)
    return [DeadLetter(int(i), str(dest), queue._row(ts, sid, value), str(reason), int(created))
            for i, dest, ts, sid, value, reason, created in queue.conn.execute(
                "SELECT id, destination, ts, series_id, value, reason, created_at_ms FROM dead_letters"
                f"{where} ORDER BY id", params)]


def stats(queue: Outbox, destination: str, *, totals: bool = True) -> QueueStats:
    """Queue figures. ``totals=False`` skips counting every stored sample (a full scan):
    the agent refreshes these every upload cycle for health, which needs only the pending
    count, and a week of samples is millions of rows on the encoder."""
    states = queue._states_in_use(destination)  # read once for both figures
    by_lane = pending_by_lane(queue, destination, states)
    return QueueStats(
        samples=count(queue) if totals else -1,
        series=int(queue.conn.execute("SELECT COUNT(*) FROM series").fetchone()[0]),
        pending=sum(by_lane.values()),
        pending_by_class={lane_name(lane): count for lane, count in by_lane.items()},
        oldest_pending_ms=oldest_pending_ms(queue, destination, states),
        dead_letters=int(queue.conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]),
        db_bytes=_file_size(queue.path),
        wal_bytes=_file_size(queue.path + "-wal"),
    )
