"""The durable queue: append samples, hand out what a destination has not acknowledged,
move its marks when it acknowledges. It knows nothing of HTTP or wire formats.

Layout (schema v2): ``samples`` is keyed by (ts, series_id): the key is the dedup key (a
re-inserted sample is a no-op) and the upload order. Progress per destination is a
high-water mark plus one "fresh" range, not a flag per row:

    sent = { key <= mark }  ∪  { fresh_lo <= key <= fresh_hi }  minus late_samples

- After an outage the newest chunk goes first (the "fresh" range), so the remote view is
  current at once; the backlog between the mark and fresh_lo then drains oldest first, and
  when it reaches fresh_lo the two ranges merge into the mark again.
- Every series is in one upload lane, its priority class (P0 ... P3, store/schema.py v4),
  and the mark and fresh range are kept per (destination, lane): a lane is served only
  when every lane before it has nothing pending, so the important series (link health,
  temperatures) are current first while the rest drain behind them, each lane oldest
  first, so each series arrives in time order.
- A sample stored with a key inside an acknowledged range (the wall clock stepped back, a
  clock sync re-stamped it, a slow source) is recorded in ``late_samples`` and sent before
  anything else, so a mark on time never strands a sample. Both places where that can
  happen (append, and an acknowledgement that moves a mark over rows it did not carry) run
  inside the write lock, so there is no race between the two threads.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

from belabox_metrics import __version__
from belabox_metrics.logs import mask_secrets
from belabox_metrics.model import Labels, Sample, decode_labels, encode_labels
from belabox_metrics.store import held, retention, views
from belabox_metrics.store.db import STORE_PAGE_SIZE, connect, transaction
from belabox_metrics.store.migrations import migrate
from belabox_metrics.store.progress import (
    IN_LANE_SQL,
    NO_KEY,
    Key,
    Progress,
    UploadState,
    state_from_row,
)
from belabox_metrics.store.schema import MIGRATIONS
from belabox_metrics.store.views import DeadLetter, QueueStats

NUMERIC, TEXT = 0, 1
LANES = (0, 1, 2, 3)  # priority classes P0 (first) ... P3
DEFAULT_LANE = 2
# An empty lane's mark is moved up to the newest sample once it trails by this much, so
# looking for its rows never scans a long stretch of other lanes' samples.
SKIP_AHEAD_MS = 10 * 60_000
_IN_LANE = IN_LANE_SQL


_LANES_IN_USE = (
    "SELECT l.lane FROM (" + " UNION ALL ".join(f"SELECT {lane} AS lane" for lane in LANES) + ") l "
    "WHERE EXISTS (SELECT 1 FROM series r WHERE r.lane = l.lane) ORDER BY l.lane"
)


class SeriesLanes:
    """Which lane each series is in. One object is shared by the queues of one process (the
    collection and upload threads each open their own), so a lane change made under the
    write lock by one is seen by the other as soon as it takes the lock."""

    def __init__(self, classify: Callable[[str], int] | None = None) -> None:
        self.classify: Callable[[str], int] = classify or (lambda name: DEFAULT_LANE)
        self.of_series: dict[int, int] = {}


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


class Row(NamedTuple):
    ts: int
    series_id: int
    sample: Sample

    @property
    def key(self) -> Key:
        return (self.ts, self.series_id)


class Claim(NamedTuple):
    """Rows handed to an uploader, ascending by key, from one region of one lane."""

    region: str  # "late" | "fresh" | "backlog"
    rows: list[Row]
    lane: int = -1  # -1 for late rows (any lane)


class SampleQueue:
    def __init__(self, conn: sqlite3.Connection, path: str = ":memory:", lanes: SeriesLanes | None = None,
                 *, owns_upload_state: bool = False, progress: UploadProgress | None = None) -> None:
        self.conn = conn
        self.path = path
        self.lanes = lanes or SeriesLanes()
        # The upload thread's queue is the only writer of upload_state while the agent runs
        # (acknowledgements, skip-ahead, class moves; other processes only read), so it may
        # keep the lanes' states in memory instead of reading them several times a cycle.
        # Entries are set when written and dropped whenever a transaction fails.
        # With ``progress`` (shared by the process's queues) acknowledgements are committed by
        # the next append instead of a commit of their own: see UploadProgress.
        self.shared_progress = progress
        self._owner = owns_upload_state
        self._cached_states: dict[tuple[str, int], UploadState] | None = (
            (progress.states if progress is not None else {}) if owns_upload_state else None)
        # Lanes a claim found empty, with the database's data_version then: until another
        # connection commits (new samples, late rows), such a lane is still empty and the
        # next claim need not scan for it. A drain of thousands of series makes dozens of
        # requests a cycle, and each scan of an empty lane reads every pending row.
        self._empty_lanes: dict[tuple[str, int], int] = {}
        self._series_ids: dict[tuple[str, str, int], int] = {}
        # By the label tuple itself: encoding labels to JSON per sample was 75 % of append.
        self._ids_by_labels: dict[tuple[str, Labels, int], int] = {}
        self._series: dict[int, tuple[str, Labels, int]] = {}

    @classmethod
    def open(cls, path: str, device_id: str | None = None, lanes: SeriesLanes | None = None,
             *, owns_upload_state: bool = False, progress: UploadProgress | None = None) -> SampleQueue:
        """``owns_upload_state``: this queue is the only one in the process that writes upload
        progress (the upload thread's), so it caches it; see ``__init__``. ``progress``: shared
        by the process's queues, acknowledgements ride on the next append's commit."""
        conn = connect(path, page_size=STORE_PAGE_SIZE)
        try:
            migrate(conn, MIGRATIONS, path=path, keep_copy=True)
        except Exception:
            conn.close()
            raise
        return cls(conn, path, lanes, owns_upload_state=owns_upload_state, progress=progress)

    @contextlib.contextmanager
    def _write(self, *, adds_samples: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; a failure (rolled back, or a COMMIT that did not happen)
        drops the cached states, which may hold what it would have written. Unless the caller
        says it only moves progress (``adds_samples=False``: acknowledgements, skip-ahead), the
        lanes found empty are forgotten: this connection's own writes do not change the
        data_version that vouches for them."""
        if adds_samples:
            self._empty_lanes.clear()
        progress = self.shared_progress if self._owner else None
        snapshot = progress.snapshot() if progress is not None else None
        try:
            with transaction(self.conn) as conn:
                yield conn
        except BaseException:
            if progress is not None and snapshot is not None:
                progress.restore(snapshot)  # what this transaction moved did not happen
            elif self._cached_states is not None:
                self._cached_states.clear()
            raise

    def _write_unsaved_progress(self) -> dict[tuple[str, int], UploadState]:
        """Inside a write transaction: write the progress acknowledged but not yet committed.
        The caller tells ``progress.saved`` once its commit returned."""
        if self.shared_progress is None:
            return {}
        unsaved = self.shared_progress.pending()
        for (destination, lane), state in unsaved.items():
            self._upsert_state(destination, lane, state)
        return unsaved

    def save_progress(self) -> int:
        """Commit the acknowledged progress not yet in the database (the agent does at
        shutdown, through ``close``). Returns how many lane states were written."""
        if self.shared_progress is None or not self.shared_progress.pending():
            return 0
        with self._write(adds_samples=False):
            written = self._write_unsaved_progress()
        self.shared_progress.saved(written)
        return len(written)

    def save_progress_if_overdue(self) -> int:
        """Commit deferred progress that has waited ``max_unsaved_s`` for an append."""
        if self.shared_progress is None or not self.shared_progress.overdue():
            return 0
        return self.save_progress()

    def close(self) -> None:
        if self._owner and self.shared_progress is not None:
            with contextlib.suppress(sqlite3.Error):
                self.save_progress()
        self.conn.close()

    # -- series ----------------------------------------------------------------------
    def _series_id(self, name: str, labels: str, value_type: int) -> int:
        key = (name, labels, value_type)
        found = self._series_ids.get(key)
        if found is None:
            self.conn.execute(
                "INSERT OR IGNORE INTO series (name, labels, value_type, lane) VALUES (?, ?, ?, ?)",
                (*key, self.lanes.classify(name)),
            )
            row = self.conn.execute(
                "SELECT id, lane FROM series WHERE name = ? AND labels = ? AND value_type = ?", key
            ).fetchone()
            found = int(row[0])
            self._series_ids[key] = found
            self.lanes.of_series[found] = int(row[1])
        return found

    def lane_of(self, series_id: int) -> int:
        lane = self.lanes.of_series.get(series_id)
        if lane is None:
            row = self.conn.execute("SELECT lane FROM series WHERE id = ?", (series_id,)).fetchone()
            lane = self.lanes.of_series[series_id] = int(row[0]) if row else DEFAULT_LANE
        return lane

    def lanes_in_use(self) -> list[int]:
        # One index probe per lane, not a scan of every series (this runs for each claim).
        return [int(r[0]) for r in self.conn.execute(_LANES_IN_USE)]

    def series(self, series_id: int) -> tuple[str, Labels, int]:
        found = self._series.get(series_id)
        if found is None:
            row = self.conn.execute(
                "SELECT name, labels, value_type FROM series WHERE id = ?", (series_id,)
            ).fetchone()
            found = (str(row[0]), decode_labels(row[1]), int(row[2]))
            self._series[series_id] = found
        return found

    def _row(self, ts: int, series_id: int, value: object) -> Row:
        name, labels, value_type = self.series(series_id)
        # tuple.__new__ skips the NamedTuples' Python-level __new__: this runs once per row
        # of every upload, and was 40 % of the drain's client time.
        if value_type == TEXT:
            sample = _new_tuple(Sample, (name, None, ts, labels, str(value)))
        else:
            # SQLite stores NaN as NULL: a numeric row without a value reads back as NaN, so
            # the uploader dead-letters it instead of mistaking it for text.
            number = math.nan if value is None else float(value)  # type: ignore[arg-type]
            sample = _new_tuple(Sample, (name, number, ts, labels, None))
        return _new_tuple(Row, (ts, series_id, sample))

    def _rows(self, raw: Iterable[Sequence[object]]) -> list[Row]:
        """``_row`` for many (ts, series_id, value) rows, lookups hoisted out of the loop: a
        claim at thousands of series builds ten thousand at a time."""
        known, new, nan = self._series, _new_tuple, math.nan
        out: list[Row] = []
        append = out.append
        for ts, sid, value in raw:
            found = known.get(sid)  # type: ignore[call-overload]
            if found is None:
                found = self.series(sid)  # type: ignore[arg-type]
            name, labels, value_type = found
            if value_type == TEXT:
                sample = new(Sample, (name, None, ts, labels, str(value)))
            else:
                sample = new(Sample, (name, nan if value is None else float(value), ts, labels, None))  # type: ignore[arg-type]
            append(new(Row, (ts, sid, sample)))
        return out

    # -- append ----------------------------------------------------------------------
    def append(self, samples: Iterable[Sample]) -> int:
        """Store samples in one fsync'd transaction; returns how many were new."""
        with self._write():
            rows = self._rows_for(samples)
            if not rows:
                return 0
            late = self._late_on_append(rows)
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT OR IGNORE INTO samples (ts, series_id, value) VALUES (?, ?, ?)", rows
            )
            inserted = self.conn.total_changes - before
            self._record_late(late)
            progress = self._write_unsaved_progress()
        if progress and self.shared_progress is not None:
            self.shared_progress.saved(progress)
            self.shared_progress.saved_with_samples += len(progress)
        return inserted

    def _late_on_append(self, rows: list[tuple[int, int, object]]) -> list[tuple[str, int, int]]:
        """(destination, ts, series_id) of the rows about to be stored inside a range that
        destination already acknowledged: they must be sent as late rows. Called before the
        insert: a row whose key is already stored is ignored by the insert (the stored value
        stays, and was sent or will be) and must not be sent again."""
        states = self._states()
        if not states:
            return []
        newest_sent_ts = max(state.highest[0] for state in states.values())
        destinations = {destination for destination, _ in states}
        late: list[tuple[str, int, int]] = []
        for ts, sid, _ in rows:
            if ts > newest_sent_ts:
                continue  # the common case: newer than anything sent
            lane = self.lane_of(sid)
            sent_to = [d for d in destinations
                       if (state := states.get((d, lane))) is not None and state.covers((ts, sid))]
            if sent_to and self.conn.execute(
                    "SELECT 1 FROM samples WHERE ts = ? AND series_id = ?", (ts, sid)).fetchone() is None:
                late.extend((destination, ts, sid) for destination in sent_to)
        return late

    def _record_late(self, late: list[tuple[str, int, int]]) -> None:
        if late:
            self.conn.executemany(
                "INSERT OR IGNORE INTO late_samples (destination, ts, series_id) VALUES (?, ?, ?)", late
            )

    def _rows_for(self, samples: Iterable[Sample]) -> list[tuple[int, int, object]]:
        rows: list[tuple[int, int, object]] = []
        append, ids = rows.append, self._ids_by_labels
        for name, value, ts, labels, text in samples:  # unpacked: attribute access cost 20 %
            value_type = TEXT if value is None else NUMERIC
            key = (name, labels, value_type)
            sid = ids.get(key)
            if sid is None:
                sid = ids[key] = self._series_id(name, encode_labels(labels), value_type)
            append((ts, sid, text if value_type == TEXT else value))
        return rows

    # -- samples stamped by an untrusted clock ---------------------------------------
    def hold(self, samples: Iterable[Sample], boot_id: str, wall_minus_monotonic_ms: int) -> int:
        return held.hold(self, samples, boot_id, wall_minus_monotonic_ms)

    def release_held(self, boot_id: str, wall_minus_monotonic_ms: int) -> int:
        return held.release_held(self, boot_id, wall_minus_monotonic_ms)

    def held_count(self) -> int:
        return held.held_count(self)

    def newest_ts(self) -> int | None:
        row = self.conn.execute("SELECT MAX(ts) FROM samples").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    # -- upload state ----------------------------------------------------------------
    def _states(self) -> dict[tuple[str, int], UploadState]:
        states = {
            (str(r[0]), int(r[1])): state_from_row(r[2:])
            for r in self.conn.execute(
                "SELECT destination, lane, mark_ts, mark_sid, fresh_lo_ts, fresh_lo_sid, fresh_hi_ts, "
                "fresh_hi_sid FROM upload_state"
            )
        }
        if self.shared_progress is not None:
            states.update(self.shared_progress.pending())  # acknowledged, not yet committed: the truth
        return states

    def state(self, destination: str, lane: int) -> UploadState:
        cache = self._cached_states
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

    def is_sent(self, destination: str, key: Key, progress: Progress | None = None) -> bool:
        """Whether ``destination`` acknowledged the sample with ``key`` (the one rule,
        store/progress.py)."""
        progress = progress if progress is not None else self.progress(destination)
        return progress.is_sent(key, self.lane_of(key[1]))

    def _save_state(self, destination: str, lane: int, state: UploadState, *, defer: bool = False) -> None:
        """Record a lane's new progress: in this transaction, or (``defer``, with a shared
        UploadProgress) in memory, to be committed by the next append."""
        if self._cached_states is not None:
            self._cached_states[(destination, lane)] = state
        if defer and self.shared_progress is not None:
            self.shared_progress.defer((destination, lane), state)
            return
        self._upsert_state(destination, lane, state)
        if self.shared_progress is not None:
            # Written here: an older unsaved entry for this lane must not overwrite it later.
            self.shared_progress.saved({(destination, lane): self.shared_progress.pending().get((destination, lane), state)})

    def _upsert_state(self, destination: str, lane: int, state: UploadState) -> None:
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

    # -- reading what is pending -------------------------------------------------------
    def _select(self, lane: int, where: str, params: Sequence[object], limit: int,
                descending: bool = False) -> list[Row]:
        order = "DESC" if descending else "ASC"
        rows = self.conn.execute(
            f"SELECT ts, series_id, value FROM samples WHERE {where} AND {_IN_LANE} "
            f"ORDER BY ts {order}, series_id {order} LIMIT ?",
            (*params, lane, limit),
        ).fetchall()
        if descending:
            rows.reverse()
        return self._rows(rows)

    def next_batch(self, destination: str, limit: int, *, newest_first: bool = False,
                   lanes: Sequence[int] = LANES) -> Claim | None:
        """The next rows to send: late ones first, then the first of ``lanes`` (in the order
        given) with anything pending. ``None`` when nothing in those lanes is pending."""
        claims = self.next_claims(destination, limit, newest_first=newest_first, lanes=lanes, combine=False)
        return claims[0] if claims else None

    def next_claims(self, destination: str, limit: int, *, newest_first: bool = False,
                    lanes: Sequence[int] = LANES, combine: bool = True) -> list[Claim]:
        """Up to ``limit`` rows to send in one request, as claims in the order they go: late
        rows first, then ``lanes`` in the order given, each lane's rows in key order (so
        every series stays in time order). With ``combine`` a claim that leaves room is
        followed by the next lane's: in steady state one request carries every lane's new
        rows, instead of one request (and one fsync'd acknowledgement) per lane. Empty when
        nothing in those lanes is pending."""
        in_use = set(self.lanes_in_use())
        serve = [lane for lane in lanes if lane in in_use]
        if not serve or limit <= 0:
            return []
        marks = ",".join("?" * len(serve))
        late = self.conn.execute(
            "SELECT s.ts, s.series_id, s.value FROM late_samples l "
            "JOIN samples s ON s.ts = l.ts AND s.series_id = l.series_id "
            f"WHERE l.destination = ? AND l.series_id IN (SELECT id FROM series WHERE lane IN ({marks})) "
            "ORDER BY l.ts, l.series_id LIMIT ?",
            (destination, *serve, limit),
        ).fetchall()
        claims: list[Claim] = []
        room = limit
        if late:
            claims.append(Claim("late", self._rows(late)))
            room -= len(late)
        version = int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        for lane in serve:
            if room <= 0 or (claims and not combine):
                break
            if self._empty_lanes.get((destination, lane)) == version:
                continue  # nothing committed by anyone else since it was found empty
            claim = self._lane_batch(destination, lane, room, newest_first)
            if claim is not None:
                claims.append(claim)
                room -= len(claim.rows)
                self._empty_lanes.pop((destination, lane), None)
            else:
                self._empty_lanes[(destination, lane)] = version
        return claims

    def _lane_batch(self, destination: str, lane: int, limit: int, newest_first: bool) -> Claim | None:
        state = self.state(destination, lane)
        if state.fresh_lo is not None and state.fresh_hi is not None:
            rows = self._select(lane, "(ts, series_id) > (?, ?)", state.fresh_hi, limit)
            if rows:
                return Claim("fresh", rows, lane)
            rows = self._select(lane, "(ts, series_id) > (?, ?) AND (ts, series_id) < (?, ?)",
                                (*state.mark, *state.fresh_lo), limit)
            return Claim("backlog", rows, lane) if rows else None
        rows = self._select(lane, "(ts, series_id) > (?, ?)", state.mark, limit + 1)
        if not rows:
            self._skip_ahead(destination, lane, state)
            return None
        if len(rows) <= limit or not newest_first:
            return Claim("backlog", rows[:limit], lane)
        # More than one request's worth is pending: the newest chunk goes first.
        return Claim("fresh", self._select(lane, "(ts, series_id) > (?, ?)", state.mark, limit, descending=True),
                     lane)

    def _skip_ahead(self, destination: str, lane: int, state: UploadState) -> None:
        """Nothing of ``lane`` is pending: when its mark trails the newest sample by a long
        stretch (its series stopped, e.g. SRT between streams), move it up, so the next look
        for its rows does not scan other lanes' samples from there. Checked again under the
        write lock: a row of the lane committed meanwhile keeps the mark where it is."""
        if time.time() * 1000 - state.mark[0] < SKIP_AHEAD_MS:
            # Cheap pre-check (this runs for every empty lane of every cycle): a mark this
            # recent cannot trail the newest sample by SKIP_AHEAD_MS, unless samples carry
            # future timestamps, and then skipping ahead waits for the clock to catch up.
            return
        newest = self.conn.execute(
            "SELECT ts, series_id FROM samples ORDER BY ts DESC, series_id DESC LIMIT 1").fetchone()
        if newest is None or newest[0] - state.mark[0] < SKIP_AHEAD_MS:
            return
        top: Key = (int(newest[0]), int(newest[1]))
        with self._write(adds_samples=False):
            if self.state(destination, lane) != state or self.conn.execute(
                    f"SELECT 1 FROM samples WHERE (ts, series_id) > (?, ?) AND {_IN_LANE} LIMIT 1",
                    (*state.mark, lane)).fetchone():
                return
            self._save_state(destination, lane, UploadState(max(top, state.mark)))

    # -- acknowledging ---------------------------------------------------------------
    def ack(self, destination: str, claim: Claim, count: int | None = None,
            dead: Sequence[tuple[Row, str]] = ()) -> None:
        """The destination accepted the first ``count`` rows of ``claim`` (default all).

        ``dead`` rows (part of the claim, never sent because the destination would drop or
        refuse them) are recorded with their reason. All in one transaction."""
        self.ack_claims(destination, [claim], count, dead)

    def ack_claims(self, destination: str, claims: Sequence[Claim], count: int | None = None,
                   dead: Sequence[tuple[Row, str]] = ()) -> None:
        """The destination accepted the first ``count`` rows (default all) of ``claims`` taken
        together, in order, as ``next_claims`` returned them and one request carried them.
        Every claim's progress and the ``dead`` rows are saved in one transaction."""
        now_ms = int(time.time() * 1000)
        remaining = sum(len(c.rows) for c in claims) if count is None else count
        # Progress alone rides on the next append's commit (UploadProgress); an acknowledgement
        # that writes rows (dead letters, stragglers) commits it, and all unsaved progress, now.
        defer = self._owner and self.shared_progress is not None and not dead and not self.shared_progress.overdue()
        written: dict[tuple[str, int], UploadState] = {}
        with self._write(adds_samples=False):
            wrote_rows = bool(dead)
            if dead:
                self.conn.executemany(
                    "INSERT INTO dead_letters (destination, ts, series_id, value, reason, created_at_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(destination, r.ts, r.series_id, r.sample.value if r.sample.text is None else r.sample.text,
                      mask_secrets(reason), now_ms) for r, reason in dead],
                )
            for claim in claims:
                if remaining <= 0:
                    break
                acked = claim.rows[:remaining]
                remaining -= len(acked)
                if acked:
                    wrote_rows = self._ack_rows(destination, claim, acked, defer=defer) or wrote_rows
            if wrote_rows or not defer:
                written = self._write_unsaved_progress()
        if written and self.shared_progress is not None:
            self.shared_progress.saved(written)

    def _ack_rows(self, destination: str, claim: Claim, acked: Sequence[Row], *, defer: bool = False) -> bool:
        """Move the progress over ``acked``; True when rows were written (late rows deleted,
        stragglers recorded), so the transaction commits anyway."""
        if claim.region == "late":
            self.conn.executemany(
                "DELETE FROM late_samples WHERE destination = ? AND ts = ? AND series_id = ?",
                [(destination, r.ts, r.series_id) for r in acked],
            )
            return True
        lane = claim.lane
        state = self.state(destination, lane)
        first, last = acked[0].key, acked[-1].key
        if claim.region == "fresh":
            if state.fresh_lo is None:
                lower, new_state = _before(first), UploadState(state.mark, first, last)
            else:
                lower = state.fresh_hi or NO_KEY
                new_state = UploadState(state.mark, state.fresh_lo, max(last, lower))
        else:
            lower = state.mark
            new_state = UploadState(max(last, state.mark), state.fresh_lo, state.fresh_hi)
        stragglers = self._record_stragglers(destination, lane, lower, last, acked)
        self._save_state(destination, lane, self._merged(lane, new_state), defer=defer and not stragglers)
        return stragglers

    def _record_stragglers(self, destination: str, lane: int, lower: Key, upper: Key,
                           acked: Sequence[Row]) -> bool:
        """Rows of the lane inside (lower, upper] that the acknowledged request did not carry
        (committed after the claim was read, with an older timestamp) become late, never
        skipped."""
        in_range = int(self.conn.execute(
            f"SELECT COUNT(*) FROM samples WHERE (ts, series_id) > (?, ?) AND (ts, series_id) <= (?, ?) "
            f"AND {_IN_LANE}", (*lower, *upper, lane),
        ).fetchone()[0])
        if in_range == len(acked):
            return False
        carried = {r.key for r in acked}
        stragglers = [
            (destination, ts, sid)
            for ts, sid in self.conn.execute(
                f"SELECT ts, series_id FROM samples WHERE (ts, series_id) > (?, ?) AND (ts, series_id) <= (?, ?) "
                f"AND {_IN_LANE}", (*lower, *upper, lane),
            )
            if (ts, sid) not in carried
        ]
        self.conn.executemany(
            "INSERT OR IGNORE INTO late_samples (destination, ts, series_id) VALUES (?, ?, ?)", stragglers
        )
        return True

    def _merged(self, lane: int, state: UploadState) -> UploadState:
        """Fold the fresh range into the mark once nothing of the lane is pending between them."""
        if state.fresh_lo is None or state.fresh_hi is None:
            return state
        gap = self.conn.execute(
            f"SELECT 1 FROM samples WHERE (ts, series_id) > (?, ?) AND (ts, series_id) < (?, ?) AND {_IN_LANE} "
            "LIMIT 1",
            (*state.mark, *state.fresh_lo, lane),
        ).fetchone()
        if gap is None:
            return UploadState(max(state.mark, state.fresh_hi))
        return state

    # -- priority classes ------------------------------------------------------------
    def apply_classes(self, destinations: Sequence[str]) -> tuple[int, int]:
        """Move series whose class the config now says differs from the stored one.

        A move is made only when it cannot change what counts as sent: for every destination
        the two lanes' progress is identical, or nothing at all is pending (then every lane's
        mark is set to the newest sample, which is true of each). Otherwise the moves wait
        (call again later: the agent does after each upload cycle). Returns (moved, waiting)."""
        with self._write():
            moves = [(int(sid), int(old), new) for sid, name, old in
                     self.conn.execute("SELECT id, name, lane FROM series")
                     if (new := self.lanes.classify(str(name))) != old]
            if not moves:
                return 0, 0
            involved = {lane for _, old, new in moves for lane in (old, new)}
            unify = []
            for destination in destinations:
                states = self.lane_states(destination)
                if len({states[lane] for lane in involved}) == 1:
                    continue
                if self.pending_count(destination) != 0:
                    return 0, len(moves)
                unify.append((destination, states))
            if unify:
                newest = self.conn.execute(
                    "SELECT ts, series_id FROM samples ORDER BY ts DESC, series_id DESC LIMIT 1").fetchone()
                for destination, states in unify:
                    top = max([state.highest for state in states.values()]
                              + ([(int(newest[0]), int(newest[1]))] if newest else []))
                    for lane in LANES:
                        self._save_state(destination, lane, UploadState(top))
            self.conn.executemany("UPDATE series SET lane = ? WHERE id = ?", [(new, sid) for sid, _, new in moves])
        # After the commit: the other thread's queue reads lanes only under the write lock.
        for sid, _, new in moves:
            self.lanes.of_series[sid] = new
        return len(moves), 0

    # -- inspection ------------------------------------------------------------------
    def _states_in_use(self, destination: str) -> dict[int, UploadState]:
        return {lane: self.state(destination, lane) for lane in self.lanes_in_use()}

    def pending_by_lane(self, destination: str, states: dict[int, UploadState] | None = None) -> dict[int, int]:
        return views.pending_by_lane(self, destination, states)

    def pending_count(self, destination: str) -> int:
        return views.pending_count(self, destination)

    def oldest_pending_ms(self, destination: str, states: dict[int, UploadState] | None = None) -> int | None:
        return views.oldest_pending_ms(self, destination, states)

    def last_acknowledged_ms(self, destination: str) -> int | None:
        return views.last_acknowledged_ms(self, destination)

    def count(self) -> int:
        return views.count(self)

    def recent(self, metric: str | None = None, last: int = 20,
               destination: str | None = None) -> list[tuple[Row, bool]]:
        return views.recent(self, metric, last, destination)

    def latest_per_series(self, since_ms: int) -> list[Row]:
        return views.latest_per_series(self, since_ms)

    def all(self) -> list[Row]:
        return views.all_rows(self)

    def dead_letters(self, destination: str | None = None) -> list[tuple[Row, str]]:
        return views.dead_letters(self, destination)

    def dead_letter_entries(self, destination: str | None = None, since_ms: int | None = None,
                            metric: str | None = None) -> list[DeadLetter]:
        return views.dead_letter_entries(self, destination, since_ms, metric)

    @staticmethod
    def _dead_filter(destination: str | None, since_ms: int | None,
                     metric: str | None) -> tuple[str, tuple[object, ...]]:
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

    def requeue_dead_letters(self, destination: str, since_ms: int | None = None,
                             metric: str | None = None) -> int:
        """Move ``destination``'s dead letters (those set aside since ``since_ms``, of
        ``metric``) back into its queue, in one transaction: each is sent again exactly once,
        as a late sample (ahead of the rest, in key order), and leaves the dead-letter table.
        Safe while the agent runs: the upload thread reads late samples every claim. A
        sample deleted meanwhile (retention) is stored again from the dead letter's copy."""
        where, params = self._dead_filter(destination, since_ms, metric)
        with self._write():
            entries = self.conn.execute(
                f"SELECT id, ts, series_id, value FROM dead_letters{where} ORDER BY id", params).fetchall()
            if not entries:
                return 0
            self.conn.executemany("INSERT OR IGNORE INTO samples (ts, series_id, value) VALUES (?, ?, ?)",
                                  [(ts, sid, value) for _, ts, sid, value in entries])
            progress = self.progress(destination)
            # Only keys the destination's progress counts as sent need the late list; any
            # other is still pending (with its lane, or late already) and goes once.
            self.conn.executemany(
                "INSERT OR IGNORE INTO late_samples (destination, ts, series_id) VALUES (?, ?, ?)",
                [(destination, ts, sid) for _, ts, sid, _ in entries if self.is_sent(destination, (ts, sid), progress)])
            self.conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i, *_ in entries])
        return len(entries)

    def stats(self, destination: str, *, totals: bool = True) -> QueueStats:
        return views.stats(self, destination, totals=totals)

    # -- sessions ----------------------------------------------------------------------
    def start_session(self, boot_id: str, started_at_ms: int, monotonic_now: float) -> int:
        with self._write():
            cursor = self.conn.execute(
                "INSERT INTO sessions (boot_id, started_at_ms, monotonic_at_start, version) VALUES (?, ?, ?, ?)",
                (boot_id, started_at_ms, monotonic_now, __version__),
            )
        return int(cursor.lastrowid or 0)

    # -- housekeeping ----------------------------------------------------------------
    def prune_sent(self, destinations: Sequence[str], older_than_ms: int) -> int:
        return retention.prune_sent(self, destinations, older_than_ms)

    def coalesce_unsent(self, destinations: Sequence[str], older_than_ms: int, bucket_ms: int,
                        max_rows: int = 200_000) -> int:
        return retention.coalesce_unsent(self, destinations, older_than_ms, bucket_ms, max_rows)

    def used_bytes(self) -> int:
        return retention.used_bytes(self)

    def enforce_max_size(self, max_bytes: int, destinations: Sequence[str], step: int = 5000) -> int:
        return retention.enforce_max_size(self, max_bytes, destinations, step)


_new_tuple = tuple.__new__


def _before(key: Key) -> Key:
    return (key[0], key[1] - 1)
