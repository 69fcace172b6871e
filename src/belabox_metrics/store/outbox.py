"""The outbox: append samples, hand out what a destination has not acknowledged, move its
marks when it acknowledges; all of it one write transaction at a time. It knows nothing of
HTTP or wire formats.

Layout (schema v2): ``samples`` is keyed by (ts, series_id): the key is the dedup key (a
re-inserted sample is a no-op) and the upload order. Progress per destination is a
high-water mark plus one "fresh" range, not a flag per row (store/progress.py holds the one
sent rule):

    sent = { key <= mark }  ∪  { fresh_lo <= key <= fresh_hi }  minus late_samples

- After an outage the newest chunk goes first (the "fresh" range), so the remote view is
  current at once; the backlog between the mark and fresh_lo then drains oldest first, and
  when it reaches fresh_lo the two ranges merge into the mark again.
- Every series is in one upload lane, its priority class (P0 ... P3, store/series.py), and
  the mark and fresh range are kept per (destination, lane): a lane is served only when
  every lane before it has nothing pending, so the important series (link health,
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
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain

from belabox_metrics.logs import mask_secrets
from belabox_metrics.model import Labels, Sample
from belabox_metrics.store import views
from belabox_metrics.store.db import transaction
from belabox_metrics.store.progress import (
    IN_LANE_SQL,
    NO_KEY,
    Key,
    KeyRange,
    Progress,
    ProgressBook,
    UploadProgress,
    UploadState,
)
from belabox_metrics.store.series import LANES, RawRow, Row, SeriesCatalogue, SeriesLanes

# An empty lane's mark is moved up to the newest sample once it trails by this much, so
# looking for its rows never scans a long stretch of other lanes' samples.
SKIP_AHEAD_MS = 10 * 60_000
_IN_LANE = IN_LANE_SQL


INSERT_SQL = "INSERT OR IGNORE INTO samples (ts, series_id, value) VALUES (?, ?, ?)"
# Rows per multi-row INSERT: 3 parameters each stay under 999, the variable limit of SQLite
# builds before 3.32.
INSERT_CHUNK = 256
_INSERT_CHUNK_SQL = ("INSERT OR IGNORE INTO samples (ts, series_id, value) VALUES "
                     + ",".join(["(?,?,?)"] * INSERT_CHUNK))


def insert_rows(conn: sqlite3.Connection, rows: Sequence[tuple[int, int, object]]) -> None:
    """``INSERT OR IGNORE`` of (ts, series_id, value) rows, in order (the first of two rows with
    one key wins, as with ``executemany``), INSERT_CHUNK rows per statement: one statement
    step per chunk instead of per row halves the insert's CPU (0.7 against 1.6 us per row at
    7,400 rows a round, bench_scale's 100x)."""
    full = len(rows) - len(rows) % INSERT_CHUNK
    if full:
        flat = list(chain.from_iterable(rows[:full]))
        step = 3 * INSERT_CHUNK
        execute = conn.execute
        for at in range(0, len(flat), step):
            execute(_INSERT_CHUNK_SQL, flat[at:at + step])
    if full < len(rows):
        conn.executemany(INSERT_SQL, rows[full:])


Seen = tuple[int, int, UploadState]  # (data_version, total_changes, the lane's progress)


class Claim:
    """Rows handed to an uploader, ascending by key, from one region of one lane.

    ``raw`` holds them as stored, ``(ts, series_id, value)``: what the uploader validates and
    encodes (a claim at thousands of series is ten thousand rows, and a Row and a Sample each
    were a third of the upload thread's CPU). ``rows`` decodes them into Rows, once, when
    asked. ``seen`` is what the store looked like when the rows were read (other
    connections' commits, this connection's own changes, the lane's progress): an
    acknowledgement finding all three unchanged knows no row can have been committed into
    the claimed range since, and skips counting the range (store/outbox.py
    ``_record_stragglers``)."""

    __slots__ = ("_catalogue", "_rows", "lane", "raw", "region", "seen")

    def __init__(self, region: str, raw: list[RawRow], lane: int = -1,
                 catalogue: SeriesCatalogue | None = None, seen: Seen | None = None) -> None:
        self.region = region  # "late" | "fresh" | "backlog"
        self.raw = raw
        self.lane = lane  # -1 for late rows (any lane)
        self.seen = seen
        self._catalogue = catalogue
        self._rows: list[Row] | None = None

    @property
    def rows(self) -> list[Row]:
        if self._rows is None:
            if self._catalogue is None:
                raise ValueError("a claim without its catalogue cannot decode its rows")
            self._rows = self._catalogue.rows(self.raw)
        return self._rows

    def __len__(self) -> int:
        return len(self.raw)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Claim) and (self.region, self.lane, self.raw)
                == (other.region, other.lane, other.raw))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Claim({self.region!r}, {len(self.raw)} rows, lane={self.lane})"


class Outbox:
    def __init__(self, conn: sqlite3.Connection, path: str = ":memory:", lanes: SeriesLanes | None = None,
                 *, owns_upload_state: bool = False, progress: UploadProgress | None = None) -> None:
        self.conn = conn
        self.path = path
        self.catalogue = SeriesCatalogue(conn, lanes)
        # The upload thread's queue is the only writer of upload_state while the agent runs,
        # so it may cache the lanes' states (ProgressBook). With ``progress`` (shared by the
        # process's queues) acknowledgements are committed by the next append instead of a
        # commit of their own: see UploadProgress.
        self.book = ProgressBook(conn, progress, owner=owns_upload_state)
        self.shared_progress = progress
        self._owner = owns_upload_state
        # Lanes a claim found empty, with the database's data_version then: until another
        # connection commits (new samples, late rows), such a lane is still empty and the
        # next claim need not scan for it. A drain of thousands of series makes dozens of
        # requests a cycle, and each scan of an empty lane reads every pending row.
        self._empty_lanes: dict[tuple[str, int], int] = {}

    @property
    def lanes(self) -> SeriesLanes:
        """The lanes of the series, shared with the process's other queues."""
        return self.catalogue.lanes

    @lanes.setter
    def lanes(self, lanes: SeriesLanes) -> None:
        self.catalogue.lanes = lanes

    @contextlib.contextmanager
    def _write(self, *, adds_samples: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; a failure (rolled back, or a COMMIT that did not happen)
        drops the cached states, which may hold what it would have written. Unless the caller
        says it only moves progress (``adds_samples=False``: acknowledgements, skip-ahead), the
        lanes found empty are forgotten: this connection's own writes do not change the
        data_version that vouches for them."""
        if adds_samples:
            self._empty_lanes.clear()
        snapshot = self.book.snapshot()
        try:
            with transaction(self.conn) as conn:
                yield conn
        except BaseException:
            self.book.rollback(snapshot)
            raise

    def save_progress(self) -> int:
        """Commit the acknowledged progress not yet in the database (the agent does at
        shutdown, through ``close``). Returns how many lane states were written."""
        if self.shared_progress is None or not self.shared_progress.pending():
            return 0
        with self._write(adds_samples=False):
            written = self.book.write_unsaved()
        self.shared_progress.saved(written)
        return len(written)

    def save_progress_if_overdue(self) -> int:
        """Commit deferred progress that has waited ``max_unsaved_s`` for an append."""
        if self.shared_progress is None or not self.shared_progress.overdue():
            return 0
        return self.save_progress()

    # -- the series catalogue and progress, as this connection sees them ---------------
    def lane_of(self, series_id: int) -> int:
        return self.catalogue.lane_of(series_id)

    def lanes_in_use(self) -> list[int]:
        return self.catalogue.lanes_in_use()

    def series(self, series_id: int) -> tuple[str, Labels, int]:
        return self.catalogue.series(series_id)

    def _row(self, ts: int, series_id: int, value: object) -> Row:
        return self.catalogue.row(ts, series_id, value)

    def _rows(self, raw: Iterable[Sequence[object]]) -> list[Row]:
        return self.catalogue.rows(raw)

    def _rows_for(self, samples: Iterable[Sample]) -> list[tuple[int, int, object]]:
        return self.catalogue.rows_for(samples)

    def state(self, destination: str, lane: int) -> UploadState:
        return self.book.state(destination, lane)

    def lane_states(self, destination: str) -> dict[int, UploadState]:
        return self.book.lane_states(destination)

    def _states_in_use(self, destination: str) -> dict[int, UploadState]:
        return {lane: self.book.state(destination, lane) for lane in self.lanes_in_use()}

    def progress(self, destination: str) -> Progress:
        """``destination``'s acknowledged ranges and late keys: ask it ``is_sent``."""
        return self.book.progress(destination)

    def is_sent(self, destination: str, key: Key, progress: Progress | None = None) -> bool:
        """Whether ``destination`` acknowledged the sample with ``key`` (the one rule,
        store/progress.py)."""
        progress = progress if progress is not None else self.progress(destination)
        return progress.is_sent(key, self.lane_of(key[1]))

    # -- append ----------------------------------------------------------------------
    def append(self, samples: Iterable[Sample]) -> int:
        """Store samples in one fsync'd transaction; returns how many were new."""
        with self._write():
            rows = self.catalogue.rows_for(samples)
            if not rows:
                return 0
            late = self._late_on_append(rows)
            before = self.conn.total_changes
            insert_rows(self.conn, rows)
            inserted = self.conn.total_changes - before
            self.book.record_late(late)
            progress = self.book.write_unsaved()
        if progress and self.shared_progress is not None:
            self.shared_progress.saved(progress)
            self.shared_progress.saved_with_samples += len(progress)
        return inserted

    def _late_on_append(self, rows: list[tuple[int, int, object]]) -> list[tuple[str, int, int]]:
        """(destination, ts, series_id) of the rows about to be stored inside a range that
        destination already acknowledged: they must be sent as late rows. Called before the
        insert: a row whose key is already stored is ignored by the insert (the stored value
        stays, and was sent or will be) and must not be sent again."""
        states = self.book.states()
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
        self.book.record_late(late)

    # -- reading what is pending -------------------------------------------------------
    def _select(self, lane: int, keys: KeyRange, limit: int, descending: bool = False) -> list[RawRow]:
        order = "DESC" if descending else "ASC"
        where, params = keys.sql()
        rows: list[RawRow] = self.conn.execute(
            f"SELECT ts, series_id, value FROM samples WHERE {where} AND {_IN_LANE} "
            f"ORDER BY ts {order}, series_id {order} LIMIT ?",
            (*params, lane, limit),
        ).fetchall()
        if descending:
            rows.reverse()
        return rows

    def _claim(self, region: str, raw: list[RawRow], lane: int = -1,
               seen: tuple[int, int] | None = None, basis: UploadState | None = None) -> Claim:
        return Claim(region, raw, lane, self.catalogue,
                     None if seen is None or basis is None else (*seen, basis))

    def store_seen(self) -> tuple[int, int]:
        """(data_version, total_changes): the same at two calls, nothing was written to the
        database in between, by this connection or any other. Read it before the rows it
        vouches for."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0]), self.conn.total_changes

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
            claims.append(self._claim("late", late))
            room -= len(late)
        # Read before the lanes' rows: see Claim.seen.
        seen = self.store_seen()
        version = seen[0]
        for lane in serve:
            if room <= 0 or (claims and not combine):
                break
            if self._empty_lanes.get((destination, lane)) == version:
                continue  # nothing committed by anyone else since it was found empty
            claim = self._lane_batch(destination, lane, room, newest_first, seen)
            if claim is not None:
                claims.append(claim)
                room -= len(claim.raw)
                self._empty_lanes.pop((destination, lane), None)
            else:
                self._empty_lanes[(destination, lane)] = version
        return claims

    def _lane_batch(self, destination: str, lane: int, limit: int, newest_first: bool,
                    seen: tuple[int, int] | None = None) -> Claim | None:
        state = self.book.state(destination, lane)
        unsent = state.unsent_ranges  # the one sent rule (store/progress.py)
        if len(unsent) == 2:  # a fresh range: what is above it first, then the backlog below
            backlog, above_fresh = unsent
            rows = self._select(lane, above_fresh, limit)
            if rows:
                return self._claim("fresh", rows, lane, seen, state)
            rows = self._select(lane, backlog, limit)
            return self._claim("backlog", rows, lane, seen, state) if rows else None
        rows = self._select(lane, unsent[0], limit + 1)
        if not rows:
            self._skip_ahead(destination, lane, state)
            return None
        if len(rows) <= limit or not newest_first:
            return self._claim("backlog", rows[:limit], lane, seen, state)
        # More than one request's worth is pending: the newest chunk goes first.
        return self._claim("fresh", self._select(lane, unsent[0], limit, descending=True),
                           lane, seen, state)

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
            if self.book.state(destination, lane) != state or self._any_row(lane, state.unsent_ranges):
                return
            self.book.save(destination, lane, UploadState(max(top, state.mark)))

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
        remaining = sum(len(c.raw) for c in claims) if count is None else count
        # Progress alone rides on the next append's commit (UploadProgress); an acknowledgement
        # that writes rows (dead letters, stragglers) commits it, and all unsaved progress, now.
        defer = self._owner and self.shared_progress is not None and not dead and not self.shared_progress.overdue()
        written: dict[tuple[str, int], UploadState] = {}
        with self._write(adds_samples=False):
            # Under the write lock (nobody can commit now), before this transaction writes.
            seen = self.store_seen()
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
                acked = claim.raw if remaining >= len(claim.raw) else claim.raw[:remaining]
                remaining -= len(acked)
                if acked:
                    wrote_rows = self._ack_rows(destination, claim, acked, seen, defer=defer) or wrote_rows
            if wrote_rows or not defer:
                written = self.book.write_unsaved()
        if written and self.shared_progress is not None:
            self.shared_progress.saved(written)

    def _ack_rows(self, destination: str, claim: Claim, acked: Sequence[RawRow], seen: tuple[int, int],
                  *, defer: bool = False) -> bool:
        """Move the progress over ``acked``; True when rows were written (late rows deleted,
        stragglers recorded), so the transaction commits anyway. ``seen``: ``store_seen``
        when the acknowledgement began."""
        if claim.region == "late":
            self.book.forget_late(destination, [(r[0], r[1]) for r in acked])
            return True
        lane = claim.lane
        state = self.book.state(destination, lane)
        first, last = (acked[0][0], acked[0][1]), (acked[-1][0], acked[-1][1])
        if claim.region == "fresh":
            if state.fresh_lo is None:
                lower, new_state = _before(first), UploadState(state.mark, first, last)
            else:
                lower = state.fresh_hi or NO_KEY
                new_state = UploadState(state.mark, state.fresh_lo, max(last, lower))
        else:
            lower = state.mark
            new_state = UploadState(max(last, state.mark), state.fresh_lo, state.fresh_hi)
        unchanged = claim.seen is not None and claim.seen == (*seen, state)
        stragglers = not unchanged and self._record_stragglers(destination, lane, lower, last, acked)
        self.book.save(destination, lane, self._merged(lane, new_state), defer=defer and not stragglers)
        return stragglers

    def _record_stragglers(self, destination: str, lane: int, lower: Key, upper: Key,
                           acked: Sequence[RawRow]) -> bool:
        """Rows of the lane inside (lower, upper] that the acknowledged request did not carry
        (committed after the claim was read, with an older timestamp) become late, never
        skipped. Not called when nothing was written to the database since the claim's rows
        were read and the lane's progress is the one they were read against (Claim.seen):
        the range then holds exactly the rows the claim carried (a claim is a contiguous run
        of its lane's keys), and counting it was most of an acknowledgement at thousands of
        series."""
        in_range = int(self.conn.execute(
            f"SELECT COUNT(*) FROM samples WHERE (ts, series_id) > (?, ?) AND (ts, series_id) <= (?, ?) "
            f"AND {_IN_LANE}", (*lower, *upper, lane),
        ).fetchone()[0])
        if in_range == len(acked):
            return False
        carried = {(r[0], r[1]) for r in acked}
        stragglers = [
            (destination, ts, sid)
            for ts, sid in self.conn.execute(
                f"SELECT ts, series_id FROM samples WHERE (ts, series_id) > (?, ?) AND (ts, series_id) <= (?, ?) "
                f"AND {_IN_LANE}", (*lower, *upper, lane),
            )
            if (ts, sid) not in carried
        ]
        self.book.record_late(stragglers)
        return True

    def _merged(self, lane: int, state: UploadState) -> UploadState:
        """Fold the fresh range into the mark once nothing of the lane is pending between them."""
        if state.fresh_lo is None or state.fresh_hi is None:
            return state
        backlog = state.unsent_ranges[0]  # between the mark and the fresh range
        if not self._any_row(lane, [backlog]):
            return UploadState(max(state.mark, state.fresh_hi))
        return state

    def _any_row(self, lane: int, ranges: Sequence[KeyRange]) -> bool:
        """Whether the lane has a stored row in any of ``ranges``."""
        for keys in ranges:
            where, params = keys.sql()
            if self.conn.execute(f"SELECT 1 FROM samples WHERE {where} AND {_IN_LANE} LIMIT 1",
                                 (*params, lane)).fetchone():
                return True
        return False

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
                states = self.book.lane_states(destination)
                if len({states[lane] for lane in involved}) == 1:
                    continue
                if views.pending_count(self, destination) != 0:
                    return 0, len(moves)
                unify.append((destination, states))
            if unify:
                newest = self.conn.execute(
                    "SELECT ts, series_id FROM samples ORDER BY ts DESC, series_id DESC LIMIT 1").fetchone()
                for destination, states in unify:
                    top = max([state.highest for state in states.values()]
                              + ([(int(newest[0]), int(newest[1]))] if newest else []))
                    for lane in LANES:
                        self.book.save(destination, lane, UploadState(top))
            self.conn.executemany("UPDATE series SET lane = ? WHERE id = ?", [(new, sid) for sid, _, new in moves])
        # After the commit: the other thread's queue reads lanes only under the write lock.
        for sid, _, new in moves:
            self.lanes.of_series[sid] = new
        return len(moves), 0

    # -- dead letters back into the outbox -------------------------------------------
    def requeue_dead_letters(self, destination: str, since_ms: int | None = None,
                             metric: str | None = None) -> int:
        """Move ``destination``'s dead letters (those set aside since ``since_ms``, of
        ``metric``) back into its queue, in one transaction: each is sent again exactly once,
        as a late sample (ahead of the rest, in key order), and leaves the dead-letter table.
        Safe while the agent runs: the upload thread reads late samples every claim. A
        sample deleted meanwhile (retention) is stored again from the dead letter's copy."""
        where, params = views.dead_filter(destination, since_ms, metric)
        with self._write():
            entries = self.conn.execute(
                f"SELECT id, ts, series_id, value FROM dead_letters{where} ORDER BY id", params).fetchall()
            if not entries:
                return 0
            insert_rows(self.conn, [(ts, sid, value) for _, ts, sid, value in entries])
            progress = self.progress(destination)
            # Only keys the destination's progress counts as sent need the late list; any
            # other is still pending (with its lane, or late already) and goes once.
            self.book.record_late(
                [(destination, ts, sid) for _, ts, sid, _ in entries if self.is_sent(destination, (ts, sid), progress)])
            self.conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i, *_ in entries])
        return len(entries)


def _before(key: Key) -> Key:
    return (key[0], key[1] - 1)
