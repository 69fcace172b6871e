"""Retention pruning searches the primary key: its cost does not grow with the samples kept
(issue 21; it scanned every row each minute, ~90 ms per million rows per class)."""

from __future__ import annotations

from pathlib import Path

from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.queue import SampleQueue

BASE_MS = 1_795_000_000_000
DEST = "http://127.0.0.1:9/api/v1/import"


def steps(queue: SampleQueue, call: object) -> int:
    """SQLite virtual-machine steps (in units of 100) a call makes: a deterministic cost."""
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    queue.conn.set_progress_handler(tick, 100)
    try:
        call()  # type: ignore[operator]
    finally:
        queue.conn.set_progress_handler(None, 100)
    return counted[0]


def stored(tmp_path: Path, rounds: int) -> SampleQueue:
    queue = SampleQueue.open(str(tmp_path / f"m{rounds}.db"))
    for r in range(rounds):
        queue.append([Sample("x", float(i), BASE_MS + r * 5000, make_labels(k=str(i))) for i in range(200)])
    claims = queue.next_claims(DEST, 10**9)
    queue.ack_claims(DEST, claims)  # all sent: only their age keeps them
    return queue


def test_pruning_nothing_costs_the_same_at_any_size(tmp_path: Path) -> None:
    small, large = stored(tmp_path, 10), stored(tmp_path, 500)  # 2,000 and 100,000 samples
    cost = [steps(q, lambda q=q: q.prune_sent([DEST], BASE_MS - 1)) for q in (small, large)]
    assert large.count() == 100_000
    assert cost[1] <= cost[0] + 10, cost  # a scan would be ~50x


def test_pruning_still_deletes_what_is_old_and_sent(tmp_path: Path) -> None:
    queue = stored(tmp_path, 50)
    assert queue.prune_sent([DEST], BASE_MS + 10 * 5000) == 10 * 200  # rounds 0..9
    assert queue.count() == 40 * 200
