"""The one sent rule (store/progress.py) and every form built from it agree: the Python
``covers``/``is_sent``, the SQL of ``KeyRange.sql`` over real SQLite rows, what pruning may
delete (``sent_everywhere_sql``) and what coalescing may touch (``unsent_everywhere``)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from belabox_metrics.store.db import connect
from belabox_metrics.store.migrations import migrate
from belabox_metrics.store.progress import (
    NO_KEY,
    Key,
    Progress,
    UploadState,
    sent_everywhere,
    sent_everywhere_below,
    sent_everywhere_sql,
    unsent_everywhere,
)
from belabox_metrics.store.queue import SampleQueue, SeriesLanes
from belabox_metrics.store.recovery import salvage
from belabox_metrics.store.schema import MIGRATIONS

URL = "http://127.0.0.1:9/api/v1/import"


def literal(state: UploadState, key: Key) -> bool:
    """The rule as the docs write it: key <= mark, or fresh_lo <= key <= fresh_hi."""
    in_fresh = state.fresh_lo is not None and state.fresh_hi is not None and state.fresh_lo <= key <= state.fresh_hi
    return key <= state.mark or in_fresh


def random_state(rng: random.Random) -> UploadState:
    mark = (rng.randint(0, 60), rng.randint(0, 3))
    if rng.random() < 0.2:
        return UploadState()
    if rng.random() < 0.5:
        return UploadState(mark)
    lo = (mark[0] + rng.randint(0, 30), rng.randint(0, 3))
    hi = (lo[0] + rng.randint(0, 30), rng.randint(0, 3))
    return UploadState(mark, max(lo, (mark[0], mark[1] + 1)), max(hi, lo))


@pytest.fixture
def samples() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE samples (ts INTEGER, series_id INTEGER, value, PRIMARY KEY (ts, series_id))")
    conn.execute("CREATE TABLE late_samples (destination TEXT, ts INTEGER, series_id INTEGER)")
    conn.executemany("INSERT INTO samples VALUES (?, ?, 0)", [(ts, sid) for ts in range(130) for sid in range(4)])
    return conn


def keys(conn: sqlite3.Connection, where: str, params: tuple[int, ...]) -> set[Key]:
    return {(int(ts), int(sid)) for ts, sid in conn.execute(f"SELECT ts, series_id FROM samples WHERE {where}", params)}


@pytest.mark.parametrize("seed", range(40))
def test_every_form_of_the_rule_agrees(samples: sqlite3.Connection, seed: int) -> None:
    rng = random.Random(seed)
    every = keys(samples, "1", ())
    states = [random_state(rng) for _ in range(rng.randint(1, 3))]
    late = [{k for k in every if state.covers(k) and rng.random() < 0.02} for state in states]
    samples.execute("DELETE FROM late_samples")
    samples.executemany("INSERT INTO late_samples VALUES ('d', ?, ?)", [k for keys_ in late for k in keys_])
    progress = [Progress({0: state}, late_keys) for state, late_keys in zip(states, late, strict=True)]
    for state in states:
        assert {k for k in every if state.covers(k)} == {k for k in every if literal(state, k)}
        in_sql: set[Key] = set()
        for unsent in state.unsent_ranges:
            in_sql |= keys(samples, *unsent.sql())
        assert in_sql == {k for k in every if not literal(state, k)}, state
    older_than = rng.randint(0, 140)
    prunable = keys(samples, *sent_everywhere_sql(states, older_than))
    assert prunable <= {k for k in every if sent_everywhere(progress, k, 0) and k[0] < older_than}
    assert {k for k in every if k[0] < older_than and all(k <= s.mark for s in states)
            and not any(k in late_keys for late_keys in late)} == prunable
    untouched: set[Key] = set()
    for unsent in unsent_everywhere(states):
        untouched |= keys(samples, *unsent.sql())
    assert untouched == {k for k in every if not any(literal(s, k) for s in states)}
    below = sent_everywhere_below(progress)
    assert all(sent_everywhere(progress, k, 0) for k in every if k <= below)


def test_no_destination_means_nothing_is_sent() -> None:
    assert sent_everywhere_below([]) == NO_KEY
    assert not sent_everywhere([], (1, 1), 0)


@pytest.mark.parametrize("version", [3, len(MIGRATIONS)])
def test_salvage_reads_progress_through_the_store_at_any_schema(tmp_path: Path, version: int) -> None:
    """Salvage copies exactly what the file's own progress says is unsent, whether the file
    keeps progress per lane or (schema 3) one state for every series; a late row is copied."""
    source = str(tmp_path / "old.db")
    conn = connect(source)
    migrate(conn, MIGRATIONS, path=source, target=version)
    conn.execute("INSERT INTO series (id, name, labels, value_type) VALUES (1, 'a', '', 0), (2, 'b', '', 1)")
    conn.executemany("INSERT INTO samples (ts, series_id, value) VALUES (?, ?, ?)",
                     [(1000 + i, 1 + i % 2, float(i) if i % 2 == 0 else f"t{i}") for i in range(10)])
    lanes = "lane, " if version > 3 else ""
    for lane in (range(4) if version > 3 else [None]):
        conn.execute(f"INSERT INTO upload_state (destination, {lanes}mark_ts, mark_sid, updated_at_ms) "
                     f"VALUES (?, {'?, ' if lane is not None else ''}?, ?, 0)",
                     (URL, *([lane] if lane is not None else []), 1005, 2))
    conn.execute("INSERT INTO late_samples (destination, ts, series_id) VALUES (?, 1002, 1)", (URL,))
    conn.commit()
    conn.close()
    queue = SampleQueue.open(str(tmp_path / "fresh.db"), lanes=SeriesLanes())
    try:
        assert salvage(source, queue) == (5, 0)
        copied = [(r.ts, r.sample.name, r.sample.value, r.sample.text) for r in queue.all()]
        assert copied == [(1002, "a", 2.0, None), (1006, "a", 6.0, None), (1007, "b", None, "t7"),
                          (1008, "a", 8.0, None), (1009, "b", None, "t9")]
    finally:
        queue.close()
