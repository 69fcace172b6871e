"""A corrupt database at start: the real agent (subprocess) moves it aside with a UTC
timestamp, creates a fresh one, logs one ERROR naming both paths, keeps running and exits 0
on SIGTERM; the next start finds nothing wrong (no crash loop, no second quarantine)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from belabox_metrics.model import Sample
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.store.recovery import (
    SUSPECT_SUFFIX,
    diagnose,
    mark_suspect,
    quarantine_if_corrupt,
    quarantine_name,
    salvage,
)
from tests.fault.support import agent_config, start_agent, stop_agent, wait_logged, wait_stored
from tests.helpers import free_port

DEVICE = "corrupt-box"


def agent_db(path: Path, count: int = 5000) -> None:
    queue = SampleQueue.open(str(path))
    queue.append([Sample("x", float(i), 1_790_000_000_000 + i) for i in range(count)])
    queue.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    queue.close()


def truncated(db: Path) -> None:
    agent_db(db)
    with db.open("r+b") as handle:
        handle.truncate(db.stat().st_size // 2)


def garbage_header(db: Path) -> None:
    agent_db(db)
    with db.open("r+b") as handle:
        handle.write(os.urandom(100))


def foreign_wal(db: Path) -> None:
    """Our database plus the uncheckpointed -wal of another application's database
    (a restore that mixed files): SQLite replays it, the result is the other's schema."""
    agent_db(db)
    other = db.parent / "other.db"
    conn = sqlite3.connect(str(other), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, data BLOB)")
    conn.executemany("INSERT INTO photos (data) VALUES (?)", [(b"x" * 200,) for _ in range(500)])
    shutil.copy(str(other) + "-wal", str(db) + "-wal")  # copied while the other is open
    conn.close()


def orphan_wal(db: Path) -> None:
    """A -wal whose database is gone: SQLite would replay it into the fresh database."""
    foreign_wal(db)
    db.unlink()


KINDS: dict[str, Callable[[Path], None]] = {
    "truncated": truncated, "garbage_header": garbage_header, "foreign_wal": foreign_wal,
    "orphan_wal": orphan_wal,
}


def log_lines(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_agent_moves_a_corrupt_database_aside_and_starts_fresh(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "agent.db"
    KINDS[kind](db)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("agent.db*") if p.is_file()}
    config = agent_config(tmp_path, f"http://127.0.0.1:{free_port()}/api/v1/import", device=DEVICE, db=db)
    log = tmp_path / "agent.log"
    for run in range(2):  # the second start must find nothing wrong
        agent = start_agent(config, log)
        wait_logged(log, "starting", run + 1, agent)
        wait_stored(db, "cpu.temperature")
        assert stop_agent(agent) == 0, log.read_text()[-2000:]
    errors = [e for e in log_lines(log) if str(e.get("level")).lower() == "error"]
    assert len(errors) == 1, errors
    error = errors[0]
    aside = Path(str(error["moved_to"]))
    assert error["db"] == str(db) and aside.name.startswith("agent.db.corrupt-")
    assert str(db) in json.dumps(error) and str(aside) in json.dumps(error)
    stamp = aside.name.removeprefix("agent.db.corrupt-")
    assert time.strptime(stamp, "%Y%m%dT%H%M%SZ")
    # The evidence is kept byte for byte, each file under the new name with its suffix.
    for name, content in before.items():
        if name.startswith("agent.db") and name != "agent.db.lock":
            moved = Path(str(aside) + name.removeprefix("agent.db"))
            assert moved.read_bytes() == content, name
    # The fresh database works: the agent stored samples in it, and it is sound.
    queue = SampleQueue.open(str(db))
    try:
        assert queue.count() > 0
        assert queue.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # Nothing replayed from the bad files; what salvage copied is what was stored there.
        salvaged = [(r.ts, r.sample.value) for r in queue.all() if r.sample.name == "x"]
        assert len(salvaged) == error["salvaged"]
        assert set(salvaged) <= {(1_790_000_000_000 + i, float(i)) for i in range(5000)}
        if kind != "truncated":
            assert salvaged == []
    finally:
        queue.close()


def test_a_sound_database_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    agent_db(db, 100)
    assert diagnose(str(db)) is None
    assert quarantine_if_corrupt(str(db), logging.getLogger("t")) is None
    assert sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name) == []
    db.write_bytes(b"")  # SQLite's own empty database: nothing wrong with it
    assert diagnose(str(db)) is None
    assert diagnose(str(tmp_path / "absent.db")) is None


def test_a_check_out_of_time_never_moves_a_file(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    agent_db(db, 50_000)
    assert diagnose(str(db), budget_s=-1.0) is None  # interrupted at once: benefit of the doubt


def test_quarantine_names_never_overwrite_evidence(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    first = quarantine_name(str(db), 1_790_000_000.0)
    assert first.endswith("agent.db.corrupt-20260921T141320Z")
    Path(first + "-wal").write_bytes(b"x")
    assert quarantine_name(str(db), 1_790_000_000.0) == first + "-1"


def test_quarantine_logs_one_error_naming_both_paths(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "agent.db"
    garbage_header(db)
    with caplog.at_level(logging.ERROR):
        moved = quarantine_if_corrupt(str(db), logging.getLogger("storage"), now=1_790_000_000.0)
    assert moved is not None and moved.problem == "file is not a database"
    assert not db.exists() and Path(moved.moved_to).exists()
    assert len(caplog.records) == 1


# -- salvage, and corruption met while running ----------------------------------------------
DESTINATION = "http://127.0.0.1:9/api/v1/import"


def damaged_with_backlog(db: Path, count: int = 100_000, acked: int = 30_000) -> None:
    """``count`` samples 10 ms apart, the first ``acked`` acknowledged, then 3000 bytes of
    garbage in one page two thirds into the file (a torn write on the SD card)."""
    queue = SampleQueue.open(str(db))
    queue.append([Sample("x", float(i), 1_790_000_000_000 + i * 10) for i in range(count)])
    claim = queue.next_batch(DESTINATION, acked)
    assert claim is not None
    queue.ack(DESTINATION, claim)
    queue.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    queue.close()
    pages = db.stat().st_size // 4096
    with db.open("r+b") as handle:
        handle.seek(pages * 2 // 3 * 4096 + 100)
        handle.write(os.urandom(3000))


def fresh_salvage(db: Path) -> Callable[[str], tuple[int, int]]:
    def into(moved: str) -> tuple[int, int]:
        queue = SampleQueue.open(str(db))
        try:
            return salvage(moved, queue)
        finally:
            queue.close()
    return into


def test_salvage_keeps_every_readable_unsent_sample_and_no_acknowledged_one(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    damaged_with_backlog(db)
    found = quarantine_if_corrupt(str(db), logging.getLogger("t"), salvage_into=fresh_salvage(db))
    assert found is not None and found.unreadable_steps > 0
    queue = SampleQueue.open(str(db))
    try:
        values = sorted(r.sample.value for r in queue.all())  # type: ignore[type-var]
        assert values and values[0] >= 30_000.0                # nothing acknowledged comes back
        assert found.salvaged == len(values) == queue.pending_count(DESTINATION)
        # One damaged page holds ~170 samples; probing past it loses at most twice its span.
        assert 70_000 - len(values) < 1_000, f"lost {70_000 - len(values)} readable samples"
        assert set(values) <= {float(i) for i in range(30_000, 100_000)}
    finally:
        queue.close()


def test_a_suspect_marker_makes_the_next_start_check_in_full(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    damaged_with_backlog(db)
    log = logging.getLogger("t")
    # The last run met corruption: the full check runs, whatever the start-up budget (which
    # out of time gives a file the benefit of the doubt: test_a_check_out_of_time...).
    mark_suspect(str(db), "database disk image is malformed")
    found = quarantine_if_corrupt(str(db), log, budget_s=-1.0)
    assert found is not None and found.problem.startswith("integrity_check")
    assert not Path(str(db) + SUSPECT_SUFFIX).exists()
    # A sound file with a marker is checked, kept, and the marker goes.
    sound = tmp_path / "sound.db"
    agent_db(sound, 100)
    mark_suspect(str(sound), "?")
    assert quarantine_if_corrupt(str(sound), log) is None and not Path(str(sound) + SUSPECT_SUFFIX).exists()


def test_corruption_met_while_running_stops_the_agent_and_the_restart_salvages(tmp_path: Path) -> None:
    """The real agent, its database damaged under it: it stops (exit 1) leaving a marker, as
    systemd would restart it, the next start checks in full, moves the file aside, copies the
    readable unsent samples into a fresh database and runs."""
    db = tmp_path / "agent.db"
    queue = SampleQueue.open(str(db))
    queue.append([Sample("x", float(i), int(time.time() * 1000) - 3_600_000 + i * 10) for i in range(300_000)])
    queue.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    queue.close()
    # Nothing listens there: everything stays pending and the agent keeps counting it.
    config = agent_config(tmp_path, f"http://127.0.0.1:{free_port()}/api/v1/import", device=DEVICE, db=db,
                          remote_interval="200ms", retry="{max_attempts: 1, backoff_base: 100ms}")
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        wait_logged(log, "starting", 1, agent)
        pages = db.stat().st_size // 4096
        with db.open("r+b") as handle:  # torn pages in the middle of the backlog
            for page in (pages // 3, pages // 2):
                handle.seek(page * 4096 + 100)
                handle.write(os.urandom(3000))
        code = agent.wait(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert code == 1, log.read_text()[-2000:]
    assert Path(str(db) + SUSPECT_SUFFIX).read_text().strip(), "no marker for the next start"
    assert any("corrupt" in str(e.get("msg", e.get("message", ""))) for e in log_lines(log))
    agent = start_agent(config, log)
    wait_logged(log, "starting", 2, agent, timeout=120)  # after the full check and the salvage
    assert stop_agent(agent) == 0, log.read_text()[-2000:]
    moved = [e for e in log_lines(log) if "moved_to" in e]
    assert len(moved) == 1 and 290_000 < int(moved[0]["salvaged"]) < 300_000, moved  # type: ignore[call-overload]
    assert not Path(str(db) + SUSPECT_SUFFIX).exists()
    queue = SampleQueue.open(str(db))
    try:
        assert queue.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # Salvaged: the backlog's readable rows, plus what the first run collected.
        assert 290_000 < sum(1 for r in queue.all() if r.sample.name == "x") <= int(moved[0]["salvaged"])  # type: ignore[call-overload]
    finally:
        queue.close()
