"""The series catalogue: each (name, labels, value type) has an id and a lane, and a stored
row (ts, series_id, value) decodes back into a Sample. Caches for both directions live
here; nothing in this module writes samples or progress.

Every series is in one upload lane, its priority class (P0 ... P3, store/schema.py v4). One
``SeriesLanes`` is shared by the process's queues (the collection and upload threads each
open their own connection), so a lane change made under the write lock by one is seen by
the other as soon as it takes the lock.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from belabox_metrics.model import Labels, Sample, decode_labels, encode_labels

Key = tuple[int, int]  # (timestamp_ms, series_id): a sample's place in the queue
RawRow = tuple[int, int, object]  # (timestamp_ms, series_id, value): a sample as stored
NUMERIC, TEXT = 0, 1
LANES = (0, 1, 2, 3)  # priority classes P0 (first) ... P3
DEFAULT_LANE = 2

_LANES_IN_USE = (
    "SELECT l.lane FROM (" + " UNION ALL ".join(f"SELECT {lane} AS lane" for lane in LANES) + ") l "
    "WHERE EXISTS (SELECT 1 FROM series r WHERE r.lane = l.lane) ORDER BY l.lane"
)


def lanes_stored(conn: sqlite3.Connection) -> bool:
    """Whether the database keeps a lane per series (schema 4 on). A file older than that
    (only ever read: salvage of a corrupt one) holds every series in DEFAULT_LANE, and its
    progress is the same for every lane (the v4 migration copies it to each)."""
    return any(r[1] == "lane" for r in conn.execute("PRAGMA table_info(series)"))


class SeriesLanes:
    """Which lane each series is in. One object is shared by the queues of one process (the
    collection and upload threads each open their own), so a lane change made under the
    write lock by one is seen by the other as soon as it takes the lock."""

    def __init__(self, classify: Callable[[str], int] | None = None) -> None:
        self.classify: Callable[[str], int] = classify or (lambda name: DEFAULT_LANE)
        self.of_series: dict[int, int] = {}


class Row(NamedTuple):
    ts: int
    series_id: int
    sample: Sample

    @property
    def key(self) -> Key:
        return (self.ts, self.series_id)


_new_tuple = tuple.__new__


class SeriesCatalogue:
    """Series ids and lanes for one connection, with their caches."""

    def __init__(self, conn: sqlite3.Connection, lanes: SeriesLanes | None = None) -> None:
        self.conn = conn
        self.lanes = lanes or SeriesLanes()
        self._series_ids: dict[tuple[str, str, int], int] = {}
        # By the label tuple itself: encoding labels to JSON per sample was 75 % of append.
        self._ids_by_labels: dict[tuple[str, Labels, int], int] = {}
        self._series: dict[int, tuple[str, Labels, int]] = {}

    def series_id(self, name: str, labels: str, value_type: int) -> int:
        """The id of a series (created, with the lane its name classifies to, if new).
        Inside the caller's write transaction."""
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

    def preload(self) -> set[int]:
        """Read every series into the cache at once (a reader of a damaged file: salvage);
        returns their ids. In a file without lanes (``lanes_stored``) each is in
        DEFAULT_LANE."""
        with_lanes = lanes_stored(self.conn)
        query = "SELECT id, name, labels, value_type, " + ("lane" if with_lanes else str(DEFAULT_LANE)) + " FROM series"
        for sid, name, labels, value_type, lane in self.conn.execute(query):
            self._series[int(sid)] = (str(name), decode_labels(labels), int(value_type))
            self.lanes.of_series[int(sid)] = int(lane)
        return set(self._series)

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

    def row(self, ts: int, series_id: int, value: object) -> Row:
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

    def rows(self, raw: Iterable[Sequence[object]]) -> list[Row]:
        """``row`` for many (ts, series_id, value) rows, lookups hoisted out of the loop: a
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

    def rows_for(self, samples: Iterable[Sample]) -> list[tuple[int, int, object]]:
        """(ts, series_id, value) rows to store for ``samples``; creates new series, so call it
        inside the write transaction."""
        rows: list[tuple[int, int, object]] = []
        append, ids = rows.append, self._ids_by_labels
        for name, value, ts, labels, text in samples:  # unpacked: attribute access cost 20 %
            value_type = TEXT if value is None else NUMERIC
            key = (name, labels, value_type)
            sid = ids.get(key)
            if sid is None:
                sid = ids[key] = self.series_id(name, encode_labels(labels), value_type)
            append((ts, sid, text if value_type == TEXT else value))
        return rows
