"""Upload progress, and THE rule for "is this sample sent" to a destination.

Progress per (destination, lane) is a high-water mark plus one "fresh" range, not a flag
per row; a sample stored later inside an acknowledged range is recorded as late for that
destination. So, for one destination:

    sent = ({ key <= mark } ∪ { fresh_lo <= key <= fresh_hi }) − late

Every reader that asks the question (the CLI's views, the size cap, dead-letter requeue,
salvage after corruption) asks ``Progress.is_sent``; the SQL that answers it for many rows
at once (pending counts, pruning) is built here too, so the copies cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

Key = tuple[int, int]  # (timestamp_ms, series_id)
NO_KEY: Key = (-(2**62), -1)


@dataclass(frozen=True)
class UploadState:
    """One lane's acknowledged ranges for one destination (late rows aside)."""
    mark: Key = NO_KEY
    fresh_lo: Key | None = None
    fresh_hi: Key | None = None

    def covers(self, key: Key) -> bool:
        """Whether ``key`` lies in an acknowledged range: a sample stored there after the
        fact is late, not sent."""
        if key <= self.mark:
            return True
        return self.fresh_lo is not None and self.fresh_hi is not None and self.fresh_lo <= key <= self.fresh_hi

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


# SQL over ``samples`` for one lane, from the same rule: rows above the mark, rows in the
# fresh range (both sides of the subtraction that counts what is pending), and the late
# rows that pruning must keep.
IN_LANE_SQL = "series_id IN (SELECT id FROM series WHERE lane = ?)"
ABOVE_MARK_SQL = "(ts, series_id) > (?, ?)"
# Its complement, written so SQLite searches the primary key instead of scanning every row
# (``NOT (ts, series_id) > (?, ?)`` is a full scan: at 7 days of retention, ~8 million rows
# each minute).
AT_OR_BELOW_MARK_SQL = "(ts, series_id) <= (?, ?)"
IN_FRESH_SQL = "(ts, series_id) >= (?, ?) AND (ts, series_id) <= (?, ?)"
NOT_LATE_ANYWHERE_SQL = ("NOT EXISTS (SELECT 1 FROM late_samples l WHERE l.ts = samples.ts "
                         "AND l.series_id = samples.series_id)")
