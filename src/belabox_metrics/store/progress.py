"""Upload progress, and THE rule for "is this sample sent" to a destination.

Progress per (destination, lane) is a high-water mark plus one "fresh" range, not a flag
per row; a sample stored later inside an acknowledged range is recorded as late for that
destination. So, for one destination:

    sent = ({ key <= mark } ∪ { fresh_lo <= key <= fresh_hi }) − late

The rule is written once, as its complement: ``UploadState.unsent_ranges`` (the key ranges
of a lane no acknowledgement covers). Everything else is built from it: ``covers`` and
``Progress.is_sent`` in Python (the CLI's views, the size cap, dead-letter requeue, salvage
after corruption, the lateness check of an append), ``KeyRange.sql`` for the SQL that
answers it for many rows at once (pending counts, the oldest pending sample, claims), and
``sent_everywhere_sql`` / ``unsent_everywhere`` for what retention may touch.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from functools import cached_property

from belabox_metrics.store.series import LANES, Key, lanes_stored

__all__ = [
    "NO_KEY",
    "Key",
    "KeyRange",
    "Progress",
    "ProgressBook",
    "UploadProgress",
    "UploadState",
    "sent_everywhere",
    "state_from_row",
]

NO_KEY: Key = (-(2**62), -1)

# SQL over ``samples``: a row of one lane, and a row no destination holds as late (pruning
# must keep those: they are inside acknowledged ranges, and not sent).
IN_LANE_SQL = "series_id IN (SELECT id FROM series WHERE lane = ?)"
NOT_LATE_ANYWHERE_SQL = ("NOT EXISTS (SELECT 1 FROM late_samples l WHERE l.ts = samples.ts "
                         "AND l.series_id = samples.series_id)")


@dataclass(frozen=True)
class KeyRange:
    """The keys strictly above ``above`` and strictly below ``below`` (None: unbounded)."""
    above: Key | None = None
    below: Key | None = None

    def holds(self, key: Key) -> bool:
        return (self.above is None or key > self.above) and (self.below is None or key < self.below)

    @property
    def empty(self) -> bool:
        return self.above is not None and self.below is not None and self.above >= self.below

    def sql(self) -> tuple[str, tuple[int, ...]]:
        """A WHERE clause over ``samples`` (and its parameters) for the keys in the range.
        Written as comparisons of the primary key, so SQLite searches it (a ``NOT (...)``
        form is a full scan: at 7 days of retention, ~8 million rows)."""
        clauses: list[str] = []
        params: tuple[int, ...] = ()
        if self.above is not None:
            clauses.append("(ts, series_id) > (?, ?)")
            params += self.above
        if self.below is not None:
            clauses.append("(ts, series_id) < (?, ?)")
            params += self.below
        return (" AND ".join(clauses) or "1"), params

    def __and__(self, other: KeyRange) -> KeyRange:
        above = max((k for k in (self.above, other.above) if k is not None), default=None)
        below = min((k for k in (self.below, other.below) if k is not None), default=None)
        return KeyRange(above, below)


@dataclass(frozen=True)
class UploadState:
    """One lane's acknowledged ranges for one destination (late rows aside)."""
    mark: Key = NO_KEY
    fresh_lo: Key | None = None
    fresh_hi: Key | None = None

    @cached_property
    def unsent_ranges(self) -> tuple[KeyRange, ...]:
        """THE rule, as the ranges of keys no acknowledgement covers, ascending: above the
        mark, except the fresh range. With a fresh range: the backlog between the mark and
        it, and what is above it. Every other form of the rule is built from this."""
        if self.fresh_lo is None or self.fresh_hi is None:
            return (KeyRange(self.mark),)
        return (KeyRange(self.mark, self.fresh_lo), KeyRange(max(self.fresh_hi, self.mark)))

    def covers(self, key: Key) -> bool:
        """Whether ``key`` lies in an acknowledged range: a sample stored there after the
        fact is late, not sent."""
        return not any(r.holds(key) for r in self.unsent_ranges)

    @property
    def highest(self) -> Key:
        return max(self.mark, self.fresh_hi or NO_KEY)


def state_from_row(row: Sequence[object]) -> UploadState:
    mark = (int(row[0]), int(row[1]))  # type: ignore[call-overload]
    lo = (int(row[2]), int(row[3])) if row[2] is not None else None  # type: ignore[call-overload]
    hi = (int(row[4]), int(row[5])) if row[4] is not None else None  # type: ignore[call-overload]
    return UploadState(mark, lo, hi)


@dataclass(frozen=True)
class Progress:
    """What one destination has acknowledged: its lanes' ranges and its late keys."""
    lanes: Mapping[int, UploadState]
    late: Set[Key]

    def is_sent(self, key: Key, lane: int) -> bool:
        state = self.lanes.get(lane)
        return state is not None and state.covers(key) and key not in self.late


def sent_everywhere(progress: Sequence[Progress], key: Key, lane: int) -> bool:
    """Sent to every destination (and there is at least one): what may be pruned."""
    return bool(progress) and all(p.is_sent(key, lane) for p in progress)


def sent_everywhere_below(progress: Sequence[Progress]) -> Key:
    """A key at or below which every sample is sent to every destination: a reader of the
    unsent rows (salvage) need not look lower. NO_KEY when there is no destination."""
    if not progress:
        return NO_KEY
    bound = min((state.mark for p in progress for state in p.lanes.values()), default=NO_KEY)
    late = min((key for p in progress for key in p.late), default=None)
    if late is not None and late <= bound:
        bound = (late[0], late[1] - 1)
    return bound


def sent_everywhere_sql(states: Sequence[UploadState], older_than_ms: int) -> tuple[str, tuple[int, ...]]:
    """A WHERE clause over one lane's ``samples`` (lane clause aside) for rows older than
    ``older_than_ms`` that every destination (``states``: one per destination) has sent:
    at or below every mark, and late for none. A fresh range is left alone: it exists only
    while a backlog drains, and merges into the mark when that is done."""
    cutoff = min(min(state.mark for state in states), (older_than_ms, -1))
    # At or below the lowest mark: outside every destination's unsent ranges. Written as a
    # comparison of the primary key, so SQLite searches it instead of scanning every row.
    return f"(ts, series_id) <= (?, ?) AND {NOT_LATE_ANYWHERE_SQL}", cutoff


def unsent_everywhere(states: Iterable[UploadState]) -> list[KeyRange]:
    """The key ranges of one lane that no destination (``states``: one per destination) has
    acknowledged, ascending (late rows aside: they lie inside acknowledged ranges)."""
    ranges = [KeyRange()]
    for state in states:
        ranges = [joint for mine in ranges for theirs in state.unsent_ranges
                  if not (joint := mine & theirs).empty]
    return sorted(ranges, key=lambda r: r.above or NO_KEY)


class UploadProgress:
    """Upload progress acknowledged in this process, shared by its queues (issue 21: flash).

    An acknowledgement moves the upload thread's progress here, in memory, without a commit
    of its own; the collection thread's next append (a round's fsync'd commit, a few seconds
    later) writes it in the same commit. That saves one fsync'd commit per upload cycle (a
    third of the agent's commits at the shipped config). The trade: after kill -9 or a power
    cut, what was acknowledged since the last append is sent again, once; VictoriaMetrics
    (``-dedup.minScrapeInterval=1ms``) and metrics-receiver store it once. Nothing stored is
    ever lost: the database's progress is only ever behind the truth, never ahead of it.

    Acknowledgements and appends both run under the database's write lock (BEGIN IMMEDIATE),
    so the lateness check of an append always sees the progress of every acknowledgement
    before it. Progress waits at most ``max_unsaved_s`` (no append meanwhile, e.g. the stream
    ended and only SRT sources are configured: the upload loop commits it itself after its
    cycle, so another process's view, `status`, `verify`, lags by that much at most), and is
    committed when the owning queue closes."""

    def __init__(self, max_unsaved_s: float = 10.0) -> None:
        self.max_unsaved_s = max_unsaved_s
        self.states: dict[tuple[str, int], UploadState] = {}  # the owner's cache: every known state
        self.unsaved: dict[tuple[str, int], UploadState] = {}
        self.unsaved_since: float | None = None
        self.saved_with_samples = 0  # progress writes that rode on an append's commit
        self.lock = threading.Lock()

    def defer(self, key: tuple[str, int], state: UploadState) -> None:
        with self.lock:
            if not self.unsaved:
                self.unsaved_since = time.monotonic()
            self.unsaved[key] = state

    def pending(self) -> dict[tuple[str, int], UploadState]:
        with self.lock:
            return dict(self.unsaved)

    def saved(self, written: dict[tuple[str, int], UploadState]) -> None:
        """``written`` is committed: drop each entry not replaced meanwhile."""
        with self.lock:
            for key, state in written.items():
                if self.unsaved.get(key) is state:
                    del self.unsaved[key]
            if not self.unsaved:
                self.unsaved_since = None

    def overdue(self) -> bool:
        since = self.unsaved_since
        return since is not None and time.monotonic() - since >= self.max_unsaved_s

    def snapshot(self) -> tuple[dict[tuple[str, int], UploadState], dict[tuple[str, int], UploadState]]:
        with self.lock:
            return dict(self.states), dict(self.unsaved)

    def restore(self, snapshot: tuple[dict[tuple[str, int], UploadState], dict[tuple[str, int], UploadState]]) -> None:
        with self.lock:
            self.states.clear()
            self.states.update(snapshot[0])
            self.unsaved.clear()
            self.unsaved.update(snapshot[1])
            if not self.unsaved:
                self.unsaved_since = None


Snapshot = tuple[dict[tuple[str, int], UploadState], dict[tuple[str, int], UploadState]]


class ProgressBook:
    """The ``upload_state`` and ``late_samples`` tables as one connection sees them.

    ``owner``: this connection is the only writer of upload_state while the agent runs (the
    upload thread's: acknowledgements, skip-ahead, class moves; other processes only read),
    so it keeps the lanes' states in memory instead of reading them several times a cycle.
    Entries are set when written and dropped whenever a transaction fails (``rollback``).
    With ``shared`` (one UploadProgress for the process's connections) acknowledgements may
    be deferred to the next append's commit: see UploadProgress."""

    def __init__(self, conn: sqlite3.Connection, shared: UploadProgress | None = None, *, owner: bool = False) -> None:
        self.conn = conn
        self.shared = shared
        self.owner = owner
        self.cached: dict[tuple[str, int], UploadState] | None = (
            (shared.states if shared is not None else {}) if owner else None)

    # -- transactions ------------------------------------------------------------------
    def snapshot(self) -> Snapshot | None:
        """Taken before a write transaction, for ``rollback`` should it fail."""
        progress = self.shared if self.owner else None
        return progress.snapshot() if progress is not None else None

    def rollback(self, snapshot: Snapshot | None) -> None:
        """The transaction failed: what it moved did not happen."""
        progress = self.shared if self.owner else None
        if progress is not None and snapshot is not None:
            progress.restore(snapshot)
        elif self.cached is not None:
            self.cached.clear()

    # -- reading -----------------------------------------------------------------------
    def states(self) -> dict[tuple[str, int], UploadState]:
        """Every (destination, lane)'s state, acknowledged but uncommitted ones included."""
        states = {
            (str(r[0]), int(r[1])): state_from_row(r[2:])
            for r in self.conn.execute(
                "SELECT destination, lane, mark_ts, mark_sid, fresh_lo_ts, fresh_lo_sid, fresh_hi_ts, "
                "fresh_hi_sid FROM upload_state"
            )
        }
        if self.shared is not None:
            states.update(self.shared.pending())  # acknowledged, not yet committed: the truth
        return states

    def state(self, destination: str, lane: int) -> UploadState:
        cache = self.cached
        if cache is not None:
            found = cache.get((destination, lane))
            if found is not None:
                return found
        row = self.conn.execute(
            "SELECT mark_ts, mark_sid, fresh_lo_ts, fresh_lo_sid, fresh_hi_ts, fresh_hi_sid "
            "FROM upload_state WHERE destination = ? AND lane = ?",
            (destination, lane),
        ).fetchone()
        state = state_from_row(row) if row else UploadState()
        if cache is not None:
            cache[(destination, lane)] = state
        return state

    def lane_states(self, destination: str) -> dict[int, UploadState]:
        return {lane: self.state(destination, lane) for lane in LANES}

    def progress(self, destination: str) -> Progress:
        """``destination``'s acknowledged ranges and late keys: ask it ``is_sent``."""
        late = {(int(ts), int(sid)) for ts, sid in self.conn.execute(
            "SELECT ts, series_id FROM late_samples WHERE destination = ?", (destination,))}
        return Progress(self.lane_states(destination), late)

    def every_progress(self) -> list[Progress]:
        """Every destination's progress in the file, committed only (a reader of another
        database: salvage). A file older than lanes (``lanes_stored``) kept one state per
        destination, which holds for every lane (as the v4 migration copies it)."""
        with_lanes = lanes_stored(self.conn)
        states: dict[str, dict[int, UploadState]] = {}
        for row in self.conn.execute(
                "SELECT destination, " + ("lane" if with_lanes else "-1") + ", mark_ts, mark_sid, fresh_lo_ts, "
                "fresh_lo_sid, fresh_hi_ts, fresh_hi_sid FROM upload_state"):
            state = state_from_row(row[2:])
            by_lane = states.setdefault(str(row[0]), {})
            by_lane.update({int(row[1]): state} if with_lanes else dict.fromkeys(LANES, state))
        late: dict[str, set[Key]] = {}
        for destination, ts, sid in self.conn.execute("SELECT destination, ts, series_id FROM late_samples"):
            late.setdefault(str(destination), set()).add((int(ts), int(sid)))
        return [Progress(by_lane, late.get(destination, set())) for destination, by_lane in states.items()]

    # -- writing (inside the caller's write transaction) ---------------------------------
    def save(self, destination: str, lane: int, state: UploadState, *, defer: bool = False) -> None:
        """Record a lane's new progress: in this transaction, or (``defer``, with a shared
        UploadProgress) in memory, to be committed by the next append."""
        if self.cached is not None:
            self.cached[(destination, lane)] = state
        if defer and self.shared is not None:
            self.shared.defer((destination, lane), state)
            return
        self.upsert(destination, lane, state)
        if self.shared is not None:
            # Written here: an older unsaved entry for this lane must not overwrite it later.
            self.shared.saved({(destination, lane): self.shared.pending().get((destination, lane), state)})

    def upsert(self, destination: str, lane: int, state: UploadState) -> None:
        lo = state.fresh_lo or (None, None)
        hi = state.fresh_hi or (None, None)
        self.conn.execute(
            "INSERT INTO upload_state (destination, lane, mark_ts, mark_sid, fresh_lo_ts, fresh_lo_sid, "
            "fresh_hi_ts, fresh_hi_sid, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(destination, lane) DO UPDATE SET mark_ts = excluded.mark_ts, "
            "mark_sid = excluded.mark_sid, fresh_lo_ts = excluded.fresh_lo_ts, "
            "fresh_lo_sid = excluded.fresh_lo_sid, fresh_hi_ts = excluded.fresh_hi_ts, "
            "fresh_hi_sid = excluded.fresh_hi_sid, updated_at_ms = excluded.updated_at_ms",
            (destination, lane, *state.mark, *lo, *hi, int(time.time() * 1000)),
        )

    def write_unsaved(self) -> dict[tuple[str, int], UploadState]:
        """Write the progress acknowledged but not yet committed. The caller tells
        ``shared.saved`` once its commit returned."""
        if self.shared is None:
            return {}
        unsaved = self.shared.pending()
        for (destination, lane), state in unsaved.items():
            self.upsert(destination, lane, state)
        return unsaved

    def record_late(self, late: Sequence[tuple[str, int, int]]) -> None:
        """(destination, ts, series_id) rows stored inside a range that destination
        acknowledged: they are sent first, once."""
        if late:
            self.conn.executemany(
                "INSERT OR IGNORE INTO late_samples (destination, ts, series_id) VALUES (?, ?, ?)", late
            )

    def forget_late(self, destination: str, keys: Sequence[Key]) -> None:
        """``destination`` acknowledged these late rows."""
        self.conn.executemany(
            "DELETE FROM late_samples WHERE destination = ? AND ts = ? AND series_id = ?",
            [(destination, ts, sid) for ts, sid in keys],
        )
