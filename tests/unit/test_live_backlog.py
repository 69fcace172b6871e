"""Queue figures between counts: the last count carried forward by what was appended and
what left the backlog since (runtime/backlog.py)."""

from __future__ import annotations

from pathlib import Path

from belabox_metrics.runtime.backlog import LiveBacklog
from belabox_metrics.store.views import QueueStats


def counted(pending: int, oldest: int | None) -> QueueStats:
    return QueueStats(samples=-1, series=3, pending=pending, pending_by_class={"P2": pending},
                      oldest_pending_ms=oldest, dead_letters=0, db_bytes=0, wal_bytes=0)


def test_pending_follows_appends_and_departures_until_the_next_count(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    db.write_bytes(b"x" * 4096)
    backlog = LiveBacklog(str(db))
    assert backlog.current(0) is None  # nothing counted yet
    backlog.appended(10, 1_000)
    before = backlog.begin_count()
    backlog.counted_now(counted(10, 1_000), before, left_total=0)
    backlog.appended(5, 2_000)  # a blocked cycle: the collectors go on storing
    backlog.appended(5, 2_200)
    now = backlog.current(0)
    assert now is not None and now.pending == 20 and now.oldest_pending_ms == 1_000 and now.db_bytes == 4096
    assert backlog.current(left_total=20).pending == 0  # type: ignore[union-attr]
    assert backlog.current(left_total=20).oldest_pending_ms is None  # type: ignore[union-attr]
    assert backlog.current(left_total=50).pending == 0  # type: ignore[union-attr] # never negative


def test_an_empty_count_then_appends_gives_the_oldest_appended(tmp_path: Path) -> None:
    backlog = LiveBacklog(str(tmp_path / "none.db"))
    backlog.counted_now(counted(0, None), backlog.begin_count(), left_total=7)
    backlog.appended(3, 5_000)
    backlog.appended(3, 4_000)
    backlog.appended(0, 1)  # nothing new stored: no effect
    now = backlog.current(7)
    assert now is not None and now.pending == 6 and now.oldest_pending_ms == 4_000 and now.db_bytes == 0
    backlog.counted_now(counted(6, 4_000), backlog.begin_count(), left_total=7)
    backlog.appended(1, 9_000)
    assert backlog.current(7).oldest_pending_ms == 4_000  # type: ignore[union-attr] # from the count
