"""Upload progress committed with the next round's samples (issue 21, flash): an
acknowledgement costs no fsync'd commit of its own, a sample stored inside acknowledged but
uncommitted progress is still sent, and a crash before the next append only re-sends.

Real SQLite files; the agent's layout: a collection queue and an upload queue (the owner of
upload progress) in one process, sharing one UploadProgress; a third connection stands for
another process (``status``) or for the agent after kill -9."""

from __future__ import annotations

import time
from pathlib import Path

from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.queue import SampleQueue, SeriesLanes, UploadProgress

DEST = "http://127.0.0.1:9/api/v1/import"
T0 = 1_700_000_000_000


def round_of(ts: int, n: int = 5) -> list[Sample]:
    return [Sample("cpu.usage_percent", float(i), ts, make_labels(cpu=str(i))) for i in range(n)]


def agent_queues(path: Path, progress: UploadProgress) -> tuple[SampleQueue, SampleQueue]:
    lanes = SeriesLanes()
    collect = SampleQueue.open(str(path), lanes=lanes, progress=progress)
    upload = SampleQueue.open(str(path), lanes=lanes, owns_upload_state=True, progress=progress)
    return collect, upload


def pending_elsewhere(path: Path) -> int:
    """What a fresh connection (another process, or the agent restarted) finds unsent."""
    other = SampleQueue.open(str(path))
    try:
        return other.pending_count(DEST)
    finally:
        other.close()


def test_an_acknowledgement_commits_nothing_until_the_next_append(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    progress = UploadProgress()
    collect, upload = agent_queues(db, progress)
    collect.append(round_of(T0))
    wal = Path(f"{db}-wal")
    size_before = wal.stat().st_size
    claims = upload.next_claims(DEST, 100)
    upload.ack_claims(DEST, claims)
    assert upload.pending_count(DEST) == 0  # the agent knows they are sent
    assert wal.stat().st_size == size_before  # no frame written: no commit, no fsync
    assert pending_elsewhere(db) == 5  # not yet in the database
    collect.append(round_of(T0 + 5000))  # the next round's commit carries the progress
    assert pending_elsewhere(db) == 5  # only the new round is unsent
    assert progress.saved_with_samples >= 1 and not progress.pending()
    collect.close()
    upload.close()


def test_a_sample_stored_inside_uncommitted_progress_is_still_sent(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    progress = UploadProgress()
    collect, upload = agent_queues(db, progress)
    collect.append(round_of(T0 + 10_000))
    upload.ack_claims(DEST, upload.next_claims(DEST, 100))
    # The clock stepped back: a round stamped before what was just acknowledged (in memory).
    collect.append(round_of(T0, 3))
    claims = upload.next_claims(DEST, 100)
    assert [(c.region, len(c.rows)) for c in claims] == [("late", 3)]
    upload.ack_claims(DEST, claims)
    assert upload.pending_count(DEST) == 0
    collect.close()
    upload.close()
    assert pending_elsewhere(db) == 0  # close committed the last progress


def test_kill_before_the_next_append_re_sends_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    collect, upload = agent_queues(db, UploadProgress())
    collect.append(round_of(T0))
    collect.append(round_of(T0 + 5000))
    upload.ack_claims(DEST, upload.next_claims(DEST, 100))
    # kill -9 here: neither queue closes. The agent started again reads the database.
    after = SampleQueue.open(str(db), owns_upload_state=True)
    claims = after.next_claims(DEST, 100)
    assert sum(len(c.rows) for c in claims) == 10  # sent again (VictoriaMetrics drops the copies)
    after.close()


def test_progress_waits_at_most_max_unsaved(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    collect, upload = agent_queues(db, UploadProgress(max_unsaved_s=0.0))
    collect.append(round_of(T0))
    upload.ack_claims(DEST, upload.next_claims(DEST, 100))  # overdue at once: committed itself
    upload.ack_claims(DEST, upload.next_claims(DEST, 100))
    assert pending_elsewhere(db) == 0
    collect.append(round_of(T0 + 5000))
    upload.ack_claims(DEST, upload.next_claims(DEST, 100))
    upload.ack_claims(DEST, upload.next_claims(DEST, 100))
    assert pending_elsewhere(db) == 0
    collect.close()
    upload.close()


def test_a_dead_letter_commits_its_progress_at_once(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    collect, upload = agent_queues(db, UploadProgress())
    collect.append(round_of(T0))
    claims = upload.next_claims(DEST, 100)
    rows = claims[0].rows
    upload.ack_claims(DEST, claims, dead=[(rows[0], "refused: 400")])
    # Another process (dead-letters requeue) must see the progress the dead letter lives under.
    assert pending_elsewhere(db) == 0
    collect.close()
    upload.close()


def test_progress_no_append_carries_is_committed_once_overdue(tmp_path: Path) -> None:
    """The stream ended and only SRT sources are configured: no append comes. The upload
    loop commits deferred progress once it has waited max_unsaved_s (before: until the next
    append or shutdown, so `status` and `verify` saw the drained backlog as pending)."""
    db = tmp_path / "m.db"
    progress = UploadProgress(max_unsaved_s=0.2)
    collect, upload = agent_queues(db, progress)
    collect.append(round_of(T0))
    upload.ack_claims(DEST, upload.next_claims(DEST, 100))
    assert upload.save_progress_if_overdue() == 0      # not waited long enough yet
    assert pending_elsewhere(db) == 5
    deadline = time.monotonic() + 30
    while not progress.overdue() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upload.save_progress_if_overdue() == 1
    assert pending_elsewhere(db) == 0
    collect.close()
    upload.close()
