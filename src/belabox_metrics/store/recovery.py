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
from dataclasses import dataclass
from urllib.parse import quote

from belabox_metrics.logs import event

SIDECARS = ("-wal", "-shm")
# quick_check reads the whole file: ~0.1 s per 50 MB from the page cache, 0.7 s cold on an
# SSD, far slower on an SD card; a boot must not wait for it. Header, schema and page-1
# damage show at once; a damaged tail beyond the budget is not seen at start.
QUICK_CHECK_BUDGET_S = 5.0


@dataclass(frozen=True)
class Quarantined:
    path: str
    moved_to: str
    problem: str
    files: tuple[str, ...]   # every file moved, as their new paths


def diagnose(path: str, budget_s: float = QUICK_CHECK_BUDGET_S) -> str | None:
    """Why the database at ``path`` is unusable, or None if it is usable (or absent)."""
    if not os.path.exists(path):
        orphans = [path + s for s in SIDECARS if os.path.exists(path + s) and os.path.getsize(path + s) > 0]
        return "a -wal/-shm without its database" if orphans else None
    if os.path.getsize(path) == 0:
        return None  # SQLite's empty database: nothing to lose, nothing wrong
    deadline = time.monotonic() + budget_s
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return None  # cannot even open it (permissions...): the normal open says why
    try:
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
        problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            return "quick_check: " + "; ".join(problems)
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
                          budget_s: float = QUICK_CHECK_BUDGET_S) -> Quarantined | None:
    """Check the database at ``path`` before anything opens it for writing; if it is
    corrupt, rename it and its -wal/-shm to ``<path>.corrupt-<UTC timestamp>[-wal|-shm]``
    (the -wal keeps its pairing, so ``sqlite3 <moved>`` reads the copy as it was) and log
    one ERROR line naming both paths. The caller then creates a fresh database."""
    problem = diagnose(path, budget_s)
    if problem is None:
        return None
    aside = quarantine_name(path, time.time() if now is None else now)
    moved = []
    for suffix in ("", *SIDECARS):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
            moved.append(aside + suffix)
    event(log, logging.ERROR, "database is corrupt: moved it aside and starting a fresh one; "
          "samples not yet uploaded from it are not sent", db=path, moved_to=aside, problem=problem,
          files=",".join(moved))
    return Quarantined(path, aside, problem, tuple(moved))
