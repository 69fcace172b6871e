"""A corrupt database at start: move it aside, start a fresh one, say so once, loudly.

An SD card that lost power mid-write, a file truncated by a full disk, a restore that put
a -wal from another database beside ours: refusing to start would put the agent in a
crash loop (systemd restarts it, it fails again) and collect nothing. Moving the bad files
aside keeps them for forensics and lets collection go on; the samples in them are lost to
upload, which the one ERROR line says.

What counts as corrupt (checked on a read-only connection, so nothing is checkpointed into
the file under examination):
- SQLite refuses it: "file is not a database" (garbage header), "database disk image is
  malformed" (truncated, torn pages);
- ``PRAGMA quick_check`` reports a problem (bounded in time: if it runs out of time the
  file is given the benefit of the doubt, never moved on a guess);
- it holds tables but not the agent's ``schema_version``: another database's content,
  e.g. replayed from a -wal that belonged to another file.
A -wal or -shm left without its database is moved aside too: SQLite would otherwise replay
that log into the fresh database.

After the move, what can still be read of the samples no destination acknowledged is copied
into the fresh database (``salvage``): a torn page costs the rows on it, not the backlog.
Acknowledged samples are not copied, so nothing is sent twice.

Corruption found while running (SQLite says "malformed" mid-read) stops the agent and leaves
a ``<db>.suspect`` marker with the error; the next start then runs the full
``integrity_check`` with no time budget, so damage beyond the start-up check's reach is found
instead of hit again (a crash loop).

Not detectable by any check of the file: a -wal from another *agent* database that rewrites
every page it touches consistently (it carries its own page 1); the result is a valid
database holding the other box's samples.
Errors that are not about the content (permission denied, locked, missing directory) are
not corruption: the normal open reports them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from belabox_metrics.logs import event
from belabox_metrics.store.outbox import Outbox
from belabox_metrics.store.progress import ProgressBook, sent_everywhere, sent_everywhere_below
from belabox_metrics.store.series import SeriesCatalogue

SIDECARS = ("-wal", "-shm")
# quick_check reads the whole file: ~0.1 s per 50 MB from the page cache, 0.7 s cold on an
# SSD, far slower on an SD card; a boot must not wait for it. Header, schema and page-1
# damage show at once; a damaged tail beyond the budget is not seen at start.
QUICK_CHECK_BUDGET_S = 5.0
SUSPECT_SUFFIX = ".suspect"
# Salvage reads in key order in chunks. A damaged page is stepped over by probing ahead
# 1 ms, 2 ms, 4 ms ... until a key beyond it reads: at most twice the damaged span is lost.
SALVAGE_CHUNK = 5000
SALVAGE_MAX_SKIPS = 10_000
SALVAGE_MAX_STEP_MS = 400 * 86_400_000


@dataclass(frozen=True)
class Quarantined:
    path: str
    moved_to: str
    problem: str
    files: tuple[str, ...]   # every file moved, as their new paths
    salvaged: int = 0        # unsent samples copied into the fresh database
    unreadable_steps: int = 0


def is_corruption(exc: BaseException) -> bool:
    """SQLITE_CORRUPT / SQLITE_NOTADB: the file's content is damaged. An OperationalError (full
    disk, locked, I/O) is about the moment, not the content."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def mark_suspect(path: str, problem: str) -> None:
    """Leave a note for the next start: check this file fully before using it."""
    with open(path + SUSPECT_SUFFIX, "w", encoding="utf-8") as handle:
        handle.write(problem + "\n")


def diagnose(path: str, budget_s: float | None = QUICK_CHECK_BUDGET_S) -> str | None:
    """Why the database at ``path`` is unusable, or None if it is usable (or absent).
    ``budget_s=None``: the full integrity_check, however long it takes."""
    if not os.path.exists(path):
        orphans = [path + s for s in SIDECARS if os.path.exists(path + s) and os.path.getsize(path + s) > 0]
        return "a -wal/-shm without its database" if orphans else None
    if os.path.getsize(path) == 0:
        return None  # SQLite's empty database: nothing to lose, nothing wrong
    deadline = time.monotonic() + (budget_s or 0.0)
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return None  # cannot even open it (permissions...): the normal open says why
    try:
        check = "quick_check"
        if budget_s is None:
            check = "integrity_check"
        else:
            conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
        problems = [str(r[0]) for r in conn.execute(f"PRAGMA {check}(5)").fetchall()]
        if problems != ["ok"]:
            return f"{check}: " + "; ".join(problems)
        tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "schema_version" not in tables:
            shown = ", ".join(sorted(tables)[:5])
            return f"not this agent's database (tables {shown}; no schema_version)"
        return None
    except sqlite3.OperationalError:
        return None  # interrupted (out of time), locked, I/O: not proof of corruption
    except sqlite3.DatabaseError as exc:  # NOTADB, CORRUPT
        return str(exc)
    finally:
        conn.close()


def quarantine_name(path: str, now: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    candidate = f"{path}.corrupt-{stamp}"
    # Two corruptions within one second (a crash loop elsewhere): never overwrite evidence.
    for n in range(1, 1000):
        if not any(os.path.exists(candidate + s) for s in ("", *SIDECARS)):
            break
        candidate = f"{path}.corrupt-{stamp}-{n}"
    return candidate


def quarantine_if_corrupt(path: str, log: logging.Logger, *, now: float | None = None,
                          budget_s: float | None = QUICK_CHECK_BUDGET_S,
                          salvage_into: Callable[[str], int | tuple[int, int]] | None = None) -> Quarantined | None:
    """Check the database at ``path`` before anything opens it for writing; if it is
    corrupt, rename it and its -wal/-shm to ``<path>.corrupt-<UTC timestamp>[-wal|-shm]``
    (the -wal keeps its pairing, so ``sqlite3 <moved>`` reads the copy as it was) and log
    one ERROR line naming both paths. The caller then creates a fresh database.

    A ``<path>.suspect`` marker (left by a run that met corruption) makes the check the full
    one, whatever ``budget_s`` says; the marker is removed once the file is checked.
    ``salvage_into(moved_path)`` (e.g. ``salvage`` into a fresh queue) runs after the move."""
    suspect = path + SUSPECT_SUFFIX
    marked = os.path.exists(suspect)
    if marked:
        event(log, logging.INFO, "the last run met a corrupt database: checking it in full", db=path)
    problem = diagnose(path, None if marked else budget_s)
    if marked:
        event(log, logging.WARNING, "the last run met a corrupt database: checked it in full", db=path,
              result=problem or "ok")
        os.remove(suspect)
    if problem is None:
        return None
    aside = quarantine_name(path, time.time() if now is None else now)
    moved = []
    for suffix in ("", *SIDECARS):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
            moved.append(aside + suffix)
    salvaged, skipped = 0, 0
    if salvage_into is not None and os.path.exists(aside):
        event(log, logging.INFO, "salvaging unsent samples from the corrupt database", reading=aside)
        try:
            found = salvage_into(aside)
            salvaged, skipped = found if isinstance(found, tuple) else (found, 0)
        except sqlite3.DatabaseError as exc:
            event(log, logging.WARNING, "could not salvage anything from the corrupt database", error=str(exc))
    event(log, logging.ERROR, "database is corrupt: moved it aside and started a fresh one; "
          "unsent samples that could still be read were copied into it", db=path, moved_to=aside,
          problem=problem, files=",".join(moved), salvaged=salvaged, unreadable_steps=skipped)
    return Quarantined(path, aside, problem, tuple(moved), salvaged, skipped)


def salvage(source: str, queue: Outbox) -> tuple[int, int]:
    """Copy the samples of the (corrupt) database at ``source`` that no destination recorded
    as acknowledged into ``queue`` (a fresh one, so they are all pending there). Reads in key
    order from the oldest progress mark; a damaged stretch is stepped over by probing ahead
    in doubling steps (bounded). Returns (samples copied, probes that failed)."""
    conn = sqlite3.connect(f"file:{quote(os.path.abspath(source))}?mode=ro", uri=True, timeout=5)
    try:
        # The damaged file's own catalogue and progress, read through the store's rooms, and
        # the one sent rule (store/progress.py) over them.
        catalogue = SeriesCatalogue(conn)
        known = catalogue.preload()
        progress = ProgressBook(conn).every_progress()
        start = sent_everywhere_below(progress)
        copied = skipped = 0
        step_ms = 1
        last = start
        while skipped < SALVAGE_MAX_SKIPS:
            rows: list[tuple[int, int, object]] = []
            failed = False
            try:  # row by row: the rows before a damaged page are kept
                for row in conn.execute("SELECT ts, series_id, value FROM samples WHERE (ts, series_id) > (?, ?) "
                                        "ORDER BY ts, series_id LIMIT ?", (*last, SALVAGE_CHUNK)):
                    rows.append(row)
            except sqlite3.DatabaseError:
                failed = True
            if not rows and not failed:
                break
            unsent = [(ts, sid, value) for ts, sid, value in rows if int(sid) in known
                      and not sent_everywhere(progress, (int(ts), int(sid)), catalogue.lane_of(int(sid)))]
            samples = [r.sample for r in catalogue.rows(unsent)]
            copied += queue.append(samples) if samples else 0
            if rows:
                last = (int(rows[-1][0]), int(rows[-1][1]))
            if not failed:
                step_ms = 1
                continue
            skipped += 1
            if rows:
                step_ms = 1
            elif step_ms > SALVAGE_MAX_STEP_MS:
                break
            last = (last[0] + step_ms, -1)
            step_ms *= 2
        return copied, skipped
    finally:
        conn.close()
