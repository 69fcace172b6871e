"""Flash writes at the shipped configuration: the agent beside Prometheus in agent mode and
vmagent, each scraping node_exporter, all in the same run, into one real VictoriaMetrics on
loopback (issue 21, "Flash writes").

    .venv/bin/python -m bench.bench_flash                  # 300 s: 40 s warm-up, 260 s measured
    .venv/bin/python -m bench.bench_flash --seconds 900    # long enough for a WAL checkpoint or two
    .venv/bin/python -m bench.bench_flash --quick          # ~40 s

A BELABOX boots from an SD card or eMMC; small synchronous writes are what wears them. Per
process, over the window after the warm-up:

- ``write_bytes`` of /proc/PID/io: what the process made the kernel write to storage (pages it
  dirtied in the page cache, 4 KiB each time a clean page is dirtied again, plus direct I/O).
  It does not include the ext4 journal (written by the kernel's jbd2 thread).
- device writes: each process keeps its data on its own ext4 filesystem, a loop-mounted image
  file (as root; otherwise plain directories, and this figure is left out): sectors written
  to that loop device (/sys/block/loopN/stat), journal, metadata and writeback included.
  ``write_bytes`` reads 0 on tmpfs and may on overlayfs: the output names the filesystem.
- fsyncs per minute: ``strace -f --seccomp-bpf -e trace=fsync,fdatasync,...`` around each
  process (when strace is installed), by file; for the agent, the fsyncs of its ``-wal`` file
  are its commits (``synchronous=FULL``: one per commit; a checkpoint adds one on the
  database file).
- samples: the agent's, the rows stored with a timestamp in the window (read from its database
  after it stopped); the peers', what VictoriaMetrics holds from each for the window
  (``{job="..."}``, scrape-generated series included).

(a) The agent, ``python -m belabox_metrics run``, configs/config.yaml as bench_footprint runs
it (host collectors, thermal mocked where there is no zone, self-metrics every 30 s, remote
every 10 s to /api/v1/import). Its logs go to a pipe this process drains: on a box they go to
the journal, not to the agent's own files.
(b) ``prometheus --enable-feature=agent`` (Debian's prometheus) scraping node_exporter every
5 s, remote write to VictoriaMetrics: a durable WAL, but no fsync per scrape.
(c) ``vmagent`` scraping the same node_exporter every 5 s: writes only when its remote falls
behind, and loses its in-memory queue on kill -9.
Target (issue 21): the agent <= 60 bytes written per sample.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml
from tests.helpers import free_port
from tests.vm import VictoriaMetrics, vm_available

from belabox_metrics.store.db import STORE_PAGE_SIZE, WAL_AUTOCHECKPOINT_BYTES, connect, transaction
from bench._common import REPO_ROOT, table, temp_dir
from bench.bench_footprint import NODE_EXPORTER, VMAGENT, default_config, export_count, wait_http

PROMETHEUS = "/usr/bin/prometheus"
DEVICE_ID = "flash-box"
TARGET_BYTES_PER_SAMPLE = 60.0
SYNC_CALLS = "fsync,fdatasync,sync_file_range,syncfs,msync"


# -- one filesystem per process --------------------------------------------------------------
class Disk:
    """A directory for one process's data: on its own loop-mounted ext4 image when this runs as
    root with losetup, so the device's sectors written count that process alone."""

    def __init__(self, root: Path, name: str, size_mb: int, loop: bool) -> None:
        self.path = root / name
        self.path.mkdir(parents=True)
        self.image: Path | None = None
        self.device: str | None = None
        if loop:
            image = root / f"{name}.ext4"
            with image.open("wb") as f:
                f.truncate(size_mb * 1024 * 1024)
            # No lazy inode-table or journal init: it would write in the background during the run.
            subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)],
                           check=True)
            subprocess.run(["mount", "-o", "loop", str(image), str(self.path)], check=True)
            self.image = image
            source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "--target", str(self.path)],
                                    check=True, capture_output=True, text=True).stdout.strip()
            self.device = os.path.basename(source)

    @property
    def fstype(self) -> str:
        found = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(self.path)],
                               capture_output=True, text=True).stdout.split()
        return " on ".join(found) if found else "unknown"

    def sectors_written(self) -> int | None:
        if self.device is None:
            return None
        with open(f"/sys/block/{self.device}/stat") as stat:
            return int(stat.read().split()[6])

    def close(self) -> None:
        if self.image is not None:
            subprocess.run(["umount", str(self.path)], check=False)  # -o loop: detached on umount
            self.image.unlink(missing_ok=True)
            self.image = None


def can_loop_mount() -> bool:
    return (os.geteuid() == 0 and all(shutil.which(t) for t in ("losetup", "mkfs.ext4", "findmnt"))
            and os.path.exists("/dev/loop-control"))


# -- a process, maybe under strace -------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    disk: Disk | None
    popen: subprocess.Popen[bytes]
    pid: int
    trace: Path | None
    drain: threading.Thread | None = None
    io_start: dict[str, int] = field(default_factory=dict)
    io_end: dict[str, int] = field(default_factory=dict)
    sectors_start: int | None = None
    sectors_end: int | None = None

    def io(self) -> dict[str, int]:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}")
        with open(f"/proc/{self.pid}/io") as io:
            return {k: int(v) for k, v in (line.split(": ") for line in io.read().splitlines())}

    def mark_start(self) -> None:
        self.io_start = self.io()
        self.sectors_start = self.disk.sectors_written() if self.disk else None

    def mark_end(self) -> None:
        self.io_end = self.io()
        self.sectors_end = self.disk.sectors_written() if self.disk else None

    @property
    def write_bytes(self) -> int:
        return self.io_end["write_bytes"] - self.io_start["write_bytes"]

    @property
    def device_bytes(self) -> int | None:
        if self.sectors_start is None or self.sectors_end is None:
            return None
        return 512 * (self.sectors_end - self.sectors_start)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)  # the process itself; strace exits with it
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.popen.kill()
            self.popen.wait()
        if self.drain is not None:
            self.drain.join(timeout=5)


def _drain(pipe: IO[bytes], log: Path) -> None:
    with log.open("ab") as out:
        for line in pipe:
            out.write(line)


def start(name: str, cmd: list[str], workdir: Path, disk: Disk | None, env: dict[str, str] | None = None,
          cwd: Path | None = None, stdin_pipe: bool = False) -> Proc:
    """Start ``cmd`` with its output drained by this process (so the process's own writes are
    its data only), under strace when it is installed."""
    trace: Path | None = None
    if shutil.which("strace"):
        trace = workdir / f"{name}.strace"
        cmd = ["strace", "-f", "--seccomp-bpf", "-qq", "-ttt", "-y", "-e", f"trace={SYNC_CALLS}",
               "-e", "signal=none", "-o", str(trace), "--", *cmd]
    popen = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL)
    assert popen.stdout is not None
    drain = threading.Thread(target=_drain, args=(popen.stdout, workdir / f"{name}.log"), daemon=True)
    drain.start()
    pid = popen.pid
    if trace is not None:
        pid = _traced_child(popen)
    return Proc(name, disk, popen, pid, trace, drain)


def _traced_child(popen: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """The traced program's pid: the first descendant of strace that is not strace (strace
    forks before it execs the program)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{popen.args!r} exited with {popen.returncode}")
        pid = popen.pid
        with contextlib.suppress(OSError, ValueError):
            while True:
                found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                if not found:
                    break
                pid = int(found[0])
                if Path(f"/proc/{pid}/comm").read_text().strip() != "strace":
                    return pid
        time.sleep(0.05)
    raise TimeoutError(f"no traced child of strace {popen.pid}")


def sync_calls(trace: Path | None, start_s: float, end_s: float) -> Counter[str] | None:
    """fsync-family calls in [start_s, end_s], by file kind (wal, db, other: path suffix)."""
    if trace is None or not trace.exists():
        return None
    found: Counter[str] = Counter()
    for line in trace.read_text(errors="replace").splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or parts[2].startswith("<..."):
            continue  # "<... fdatasync resumed>": counted where it started
        try:
            when = float(parts[1])
        except ValueError:
            continue
        if not start_s <= when <= end_s:
            continue
        call, _, args = parts[2].partition("(")
        path = args.partition("<")[2].partition(">")[0]
        found[f"{call} {file_kind(path)}"] += 1
    return found


def file_kind(path: str) -> str:
    base = os.path.basename(path)
    for suffix in ("-wal", "-shm", "-journal"):
        if base.endswith(suffix):
            return suffix[1:]
    if base.endswith(".db"):
        return "db"
    if "/wal/" in path or "/chunks_head/" in path:
        return "prometheus-wal"
    return "other" if path else "?"


# -- where the agent's bytes go: its WAL, frame by frame ------------------------------------------------
WAL_HEADER, FRAME_HEADER = 32, 24


def wal_commits(wal: bytes, from_offset: int = 0) -> tuple[int, list[list[int]]]:
    """(page size, the page numbers of each commit) of the valid frames of a WAL image: those
    carrying the header's salts, up to the last commit frame (SQLite's own rule, checksums
    aside); only commits starting at or after ``from_offset``."""
    if len(wal) < WAL_HEADER:
        return 0, []
    page_size = int.from_bytes(wal[8:12], "big")
    salts = wal[16:24]
    commits: list[list[int]] = []
    current: list[int] = []
    offset = first = WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(wal):
        header = wal[offset:offset + FRAME_HEADER]
        if header[8:16] != salts:
            break
        if not current:
            first = offset
        current.append(int.from_bytes(header[0:4], "big"))
        if int.from_bytes(header[4:8], "big"):  # the database size after a commit: a commit frame
            if first >= from_offset:
                commits.append(current)
            current = []
        offset += FRAME_HEADER + page_size
    return page_size, commits


def page_owners(db: Path) -> dict[int, str]:
    """Which table or index each page of a database belongs to (SQLite's dbstat)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {int(page): str(name) for name, page in conn.execute("SELECT name, pageno FROM dbstat")}
    finally:
        conn.close()


def where_bytes_go(db: Path, snapshot: Path, from_offset: int) -> str:
    """A copy of the agent's database and WAL taken at the end of the window, frame by frame:
    frames per commit and which tables the frames hold, per kind of commit."""
    snapshot.mkdir(exist_ok=True)
    copy = snapshot / db.name
    wal = Path(f"{db}-wal").read_bytes()
    shutil.copyfile(db, copy)
    Path(f"{copy}-wal").write_bytes(wal)
    page_size, commits = wal_commits(wal, from_offset)
    if not commits:  # the WAL was reset during the window: all of it
        page_size, commits = wal_commits(wal)
    if not commits:
        return "agent WAL: no valid frames (checkpointed and reset)"
    owners = page_owners(copy)
    kinds: dict[str, list[list[int]]] = {}
    for pages in commits:
        tables = {owners.get(p, "free/new") for p in pages}
        kind = ("append" if "samples" in tables else "upload progress" if "upload_state" in tables
                else "other: " + "+".join(sorted(tables)))
        kinds.setdefault(kind, []).append(pages)
    lines = [f"agent WAL at the end of the window: page size {page_size}, {len(commits)} commits in the window (or "
             f"since the WAL's last reset), {sum(map(len, commits))} frames ({page_size + FRAME_HEADER} bytes each)"]
    for kind, group in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        frames = Counter(owners.get(p, "free/new") for pages in group for p in pages)
        lines.append(f"  {kind}: {len(group)} commits, {sum(frames.values()) / len(group):.2f} frames per commit: "
                     + ", ".join(f"{name} {n / len(group):.2f}" for name, n in frames.most_common()))
    return "\n".join(lines)


# -- the SQLite floor: the agent's rows, and nothing else, with the agent's durability ----------------
Row = tuple[int, int, object]
WAL_MAGIC_LE, WAL_MAGIC_BE = 0x377F0682, 0x377F0683
SAMPLES_DDL = """CREATE TABLE IF NOT EXISTS samples (
    ts INTEGER NOT NULL, series_id INTEGER NOT NULL, value, PRIMARY KEY (ts, series_id)) WITHOUT ROWID"""
MIN_TS_MS = 10**11  # a key column below this is no millisecond timestamp (series_by_lane's lane, ...)


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        byte = buf[at + i]
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, at + i + 1
    return (value << 8) | buf[at + 8], at + 9


_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def _record(payload: bytes) -> list[object] | None:
    """The values of one SQLite record (None when it holds a BLOB: no samples row does)."""
    header_size, at = _varint(payload, 0)
    types: list[int] = []
    while at < header_size:
        serial, at = _varint(payload, at)
        types.append(serial)
    values: list[object] = []
    body = header_size
    for serial in types:
        if serial == 0:
            values.append(None)
        elif serial in _INT_SIZES:
            n = _INT_SIZES[serial]
            values.append(int.from_bytes(payload[body:body + n], "big", signed=True))
            body += n
        elif serial == 7:
            values.append(struct.unpack(">d", payload[body:body + 8])[0])
            body += 8
        elif serial in (8, 9):
            values.append(serial - 8)
        elif serial >= 13 and serial % 2:
            n = (serial - 13) // 2
            values.append(payload[body:body + n].decode("utf-8", "replace"))
            body += n
        else:
            return None
    return values


def page_sample_rows(page: bytes, pgno: int) -> list[Row]:
    """The ``samples`` rows in one page image of the agent's database: cells of an index B-tree
    page (a WITHOUT ROWID table is one; its interior cells are rows too) whose record is
    (millisecond ts, series id, value). Cells that overflow the page (long text) are skipped."""
    hdr = 100 if pgno == 1 else 0
    kind = page[hdr]
    if kind not in (0x02, 0x0A):
        return []
    max_local = (len(page) - 12) * 64 // 255 - 23
    cells = int.from_bytes(page[hdr + 3:hdr + 5], "big")
    pointers = hdr + (12 if kind == 0x02 else 8)
    rows: list[Row] = []
    for i in range(cells):
        at = int.from_bytes(page[pointers + 2 * i:pointers + 2 * i + 2], "big") + (4 if kind == 0x02 else 0)
        if at >= len(page):
            continue
        size, at = _varint(page, at)
        if size > max_local:
            continue
        values = _record(page[at:at + size])
        if (values is not None and len(values) == 3 and isinstance(values[0], int) and values[0] >= MIN_TS_MS
                and isinstance(values[1], int)):
            rows.append((values[0], values[1], values[2]))
    return rows


def _wal_checksum(data: bytes, s0: int, s1: int, big: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


class WalTail:
    """Follows a live SQLite WAL by reading the file (no SQLite connection: no lock, no -shm
    write, nothing charged to or written on the watched process's disk) and yields the samples
    rows each new commit brought. A frame counts once its cumulative checksum matches (SQLite's
    own rule), so a commit still being written is read on the next poll."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.salts = b""
        self.offset = WAL_HEADER
        self.sums = (0, 0)
        self.big = False
        self.page_size = 0
        self.seen: set[tuple[int, int]] = set()
        self.restarts = 0            # the WAL started again from its beginning
        self.wrapped = False         # ... once after a first pass of at least the autocheckpoint size
        self.commits = 0

    def poll(self) -> list[list[Row]]:
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return []
        with f:
            header = f.read(WAL_HEADER)
            if len(header) < WAL_HEADER:
                return []
            magic = int.from_bytes(header[0:4], "big")
            if magic not in (WAL_MAGIC_LE, WAL_MAGIC_BE):
                return []
            if header[16:24] != self.salts:
                if self.salts:
                    self.restarts += 1
                    self.wrapped = self.wrapped or self.offset >= WAL_AUTOCHECKPOINT_BYTES
                self.salts = header[16:24]
                self.big = magic == WAL_MAGIC_BE
                self.page_size = int.from_bytes(header[8:12], "big")
                self.offset = WAL_HEADER
                self.sums = (int.from_bytes(header[24:28], "big"), int.from_bytes(header[28:32], "big"))
            f.seek(self.offset)
            data = f.read()
        found: list[list[Row]] = []
        frame = FRAME_HEADER + self.page_size
        at, committed, sums = 0, 0, self.sums
        pending: list[tuple[int, bytes]] = []
        while at + frame <= len(data):
            head = data[at:at + FRAME_HEADER]
            if head[8:16] != self.salts:
                break
            page = data[at + FRAME_HEADER:at + frame]
            sums = _wal_checksum(page, *_wal_checksum(head[0:8], *sums, self.big), self.big)
            if sums != (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")):
                break
            pending.append((int.from_bytes(head[0:4], "big"), page))
            at += frame
            if int.from_bytes(head[4:8], "big"):  # a commit frame: the commit is complete
                rows: list[Row] = []
                for pgno, image in pending:
                    for row in page_sample_rows(image, pgno):
                        if (row[0], row[1]) not in self.seen:
                            self.seen.add((row[0], row[1]))
                            rows.append(row)
                self.commits += 1
                if rows:
                    found.append(sorted(rows))
                pending = []
                self.sums, committed = sums, at
        self.offset += committed
        return found


# The floors, each on its own filesystem, all fed the same agent commits: what the promise costs
# at the least, and what a trade away from it (or a different key) would save.
FLOORS: dict[str, str] = {
    "floor": "the agent's rows, one fsync'd commit per agent commit: the agent's promise, nothing else",
    "floor-1row": "the first row of each agent commit only: the least any fsync'd commit per round writes",
    "floor-rowid": "the agent's rows keyed by one integer (ts << 20 | series id) in a rowid table, per commit",
    "floor-batch3": "the agent's rows, one commit per 3 agent commits: a power cut loses up to 15 s",
    "floor-batch6": "the agent's rows, one commit per 6 agent commits: a power cut loses up to 30 s",
}


def floor_writer(path: Path, name: str, prewrap: bool, ready: Path) -> int:
    """A floor (``FLOORS``): the agent's ``samples`` table alone, on the agent's own connection
    settings (``connect``: WAL, synchronous=FULL, its page size, autocheckpoint and journal size
    limit), one transaction per line of stdin (a JSON list of rows: one agent commit) or per
    ``batchN`` lines, nothing else. ``prewrap``: first take the WAL through one full pass (rows
    far in the past), as the agent's is once it has run ~16 minutes, so the window sees a WAL
    overwritten in place."""
    conn = connect(str(path), page_size=STORE_PAGE_SIZE)
    rowid = name == "floor-rowid"
    conn.execute("CREATE TABLE IF NOT EXISTS samples (key INTEGER PRIMARY KEY, value)" if rowid else SAMPLES_DDL)
    insert = "INSERT OR IGNORE INTO samples VALUES (?, ?)" if rowid else "INSERT OR IGNORE INTO samples VALUES (?, ?, ?)"

    def shaped(rows: list[Row]) -> list[tuple[object, ...]]:
        return [((ts << 20) | sid, value) for ts, sid, value in rows] if rowid else list(rows)

    if prewrap:
        wal = Path(f"{path}-wal")
        salts, ts = wal.read_bytes()[16:24], 1
        while True:
            with transaction(conn):
                conn.executemany(insert, shaped([(ts, sid, float(sid)) for sid in range(70)]))
            ts += 1
            with wal.open("rb") as f:
                head = f.read(WAL_HEADER)
            if head[16:24] != salts and wal.stat().st_size >= WAL_AUTOCHECKPOINT_BYTES:
                break
    ready.write_text("ready")
    every = int(name.removeprefix("floor-batch")) if name.startswith("floor-batch") else 1
    batch: list[Row] = []
    for lines, line in enumerate(sys.stdin, 1):
        rows: list[Row] = [(int(r[0]), int(r[1]), r[2]) for r in json.loads(line)]
        batch += rows[:1] if name == "floor-1row" else rows
        if lines % every == 0:
            with transaction(conn):
                conn.executemany(insert, shaped(batch))
            batch = []
    conn.close()
    return 0


# -- the run -------------------------------------------------------------------------------------------
@dataclass
class Result:
    proc: Proc
    samples: int = 0
    syncs: Counter[str] | None = None
    files_start: dict[str, int] = field(default_factory=dict)
    files_end: dict[str, int] = field(default_factory=dict)
    where: str = ""

    def per_sample(self, value: float | None) -> float | str:
        if value is None or not self.samples:
            return ""
        return value / self.samples


def sqlite_files(db: Path) -> dict[str, int]:
    return {suffix or "db": os.path.getsize(f"{db}{suffix}") if os.path.exists(f"{db}{suffix}") else 0
            for suffix in ("", "-wal", "-shm")}


def stored_samples(db: Path, start_ms: int, end_ms: int) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM samples WHERE ts BETWEEN ? AND ?",
                                (start_ms, end_ms)).fetchone()[0])
    finally:
        conn.close()


@contextlib.contextmanager
def disks(workdir: Path, loop: bool) -> Iterator[dict[str, Disk]]:
    made: dict[str, Disk] = {}
    try:
        for name in ("agent", "prometheus", "vmagent", *FLOORS):
            made[name] = Disk(workdir, name, 512, loop)
        yield made
    finally:
        for disk in made.values():
            disk.close()


class Mirror:
    """Sends each agent commit's new samples rows to the floors as it lands in the agent's WAL
    (polled every 0.1 s: a round's commit reaches the floors within that), and counts what it sent."""

    def __init__(self, wal: Path, floors: list[Proc]) -> None:
        self.tail = WalTail(wal)
        self.floors = floors
        self.sent: list[tuple[float, int]] = []  # (when, rows) per agent commit with samples
        self.window = (0, 0, 0)  # (agent commits, of which with samples, rows) in the window
        self._commits_at_start = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mirror", daemon=True)

    def _run(self) -> None:
        try:
            while not self.stopping.wait(0.1):
                for rows in self.tail.poll():
                    line = (json.dumps(rows) + "\n").encode()
                    for floor in self.floors:
                        assert floor.popen.stdin is not None
                        floor.popen.stdin.write(line)
                        floor.popen.stdin.flush()
                    self.sent.append((time.time(), len(rows)))
        except BaseException as e:
            self.error = e

    def mark_start(self) -> None:
        self._commits_at_start = self.tail.commits

    def mark_end(self, start_s: float, end_s: float) -> None:
        sent = [n for when, n in self.sent if start_s <= when <= end_s]
        self.window = (self.tail.commits - self._commits_at_start, len(sent), sum(sent))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        for floor in self.floors:
            if floor.popen.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    floor.popen.stdin.close()


def start_floor(name: str, workdir: Path, disk: Disk, prewrap: bool) -> Proc:
    ready = workdir / f"{name}.ready"
    cmd = [sys.executable, "-m", "bench.bench_flash", "--floor-writer", str(disk.path / "floor.db"),
           "--floor-name", name, "--floor-ready", str(ready)]
    cmd += ["--floor-prewrap"] if prewrap else []
    proc = start(name, cmd, workdir, disk, cwd=REPO_ROOT, stdin_pipe=True)
    deadline = time.monotonic() + 300
    while not ready.exists():
        if not proc.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not get ready")
        time.sleep(0.2)
    return proc


def run(seconds: float, warmup: float, workdir: Path, loop: bool,
        extra: dict[str, dict[str, object]] | None = None,
        steady: bool = False) -> tuple[list[Result], float, dict[str, str], Mirror]:
    binary = vm_available()
    missing = [b for b in (NODE_EXPORTER, VMAGENT, PROMETHEUS) if not os.access(b, os.X_OK)]
    if binary is None or missing:
        raise SystemExit(f"needs Debian victoria-metrics, vmagent, prometheus and prometheus-node-exporter "
                         f"(missing: {missing or 'victoria-metrics'})")
    vm = VictoriaMetrics(binary, workdir / "vm", free_port())
    vm.start()
    procs: list[Proc] = []
    try:
        with disks(workdir, loop) as where, _stopped(procs):
            health_port, exporter_port, prom_port, vmagent_port = (free_port() for _ in range(4))
            config = default_config(where["agent"].path, DEVICE_ID, vm.import_url, health_port, extra=extra)
            db = where["agent"].path / f"{DEVICE_ID}.db"
            target = [f"127.0.0.1:{exporter_port}"]
            for job in ("prometheus-agent", "vmagent"):
                scrape: dict[str, object] = {
                    "global": {"scrape_interval": "5s"},
                    "scrape_configs": [{"job_name": job, "static_configs": [{"targets": target}]}]}
                if job == "prometheus-agent":
                    scrape["remote_write"] = [{"url": f"{vm.url}/api/v1/write"}]
                (workdir / f"{job}.yml").write_text(yaml.safe_dump(scrape))
            exporter = start("node_exporter", [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{exporter_port}"],
                             workdir, None)
            procs.append(exporter)
            wait_http(f"http://127.0.0.1:{exporter_port}/metrics", proc=exporter.popen)
            agent = start("agent", [sys.executable, "-m", "belabox_metrics", "run", "--config", str(config)], workdir,
                          where["agent"], env={**os.environ, "MALLOC_ARENA_MAX": "2"}, cwd=REPO_ROOT)
            prom = start("prometheus", [PROMETHEUS, "--enable-feature=agent",
                                        f"--config.file={workdir / 'prometheus-agent.yml'}",
                                        f"--storage.agent.path={where['prometheus'].path}",
                                        f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                         workdir, where["prometheus"])
            vmagent = start("vmagent", [VMAGENT, f"-httpListenAddr=127.0.0.1:{vmagent_port}",
                                        f"-promscrape.config={workdir / 'vmagent.yml'}",
                                        f"-remoteWrite.url={vm.url}/api/v1/write",
                                        f"-remoteWrite.tmpDataPath={where['vmagent'].path}", "-loggerLevel=ERROR"],
                            workdir, where["vmagent"])
            procs += [agent, prom, vmagent]
            floors = [start_floor(name, workdir, where[name], steady) for name in FLOORS]
            procs += floors
            mirror = Mirror(Path(f"{db}-wal"), floors)
            mirror.thread.start()
            wait_http(f"http://127.0.0.1:{health_port}/metrics", proc=agent.popen)
            wait_http(f"http://127.0.0.1:{prom_port}/-/ready", proc=prom.popen)
            wait_http(f"http://127.0.0.1:{vmagent_port}/metrics", proc=vmagent.popen)
            measured = [agent, prom, vmagent, *floors]
            results = [Result(p) for p in measured]
            began = time.time()
            time.sleep(warmup)
            # --steady: the window opens once the agent's WAL has been through a full pass and
            # started again from its beginning (overwritten in place from then on).
            while steady and not mirror.tail.wrapped and time.time() - began < seconds - 60:
                _check_alive(procs, mirror)
                time.sleep(1.0)
            start_s = time.time()
            for p in measured:
                p.mark_start()
            mirror.mark_start()
            results[0].files_start = sqlite_files(db)
            for r in results[3:]:
                r.files_start = sqlite_files(where[r.proc.name].path / "floor.db")
            while time.time() - (began if steady else start_s) < seconds - (0 if steady else warmup):
                time.sleep(0.5)
                _check_alive(procs, mirror)
            for p in measured:
                p.mark_end()
            end_s = time.time()
            mirror.mark_end(start_s, end_s)
            results[0].files_end = sqlite_files(db)
            results[0].where = where_bytes_go(db, workdir / "snapshot", results[0].files_start.get("-wal", 0))
            for r in results[3:]:
                fdb = where[r.proc.name].path / "floor.db"
                r.files_end = sqlite_files(fdb)
                r.where = where_bytes_go(fdb, workdir / f"snapshot-{r.proc.name}", r.files_start.get("-wal", 0))
            mirror.stop()
            window_s = end_s - start_s
            agent.stop()
            prom.stop()
            time.sleep(3)  # vmagent sends every second
            vmagent.stop(signal.SIGINT)
            start_ms, end_ms = int(start_s * 1000), int(end_s * 1000)
            results[0].samples = stored_samples(db, start_ms, end_ms)
            results[1].samples = export_count(vm, '{job="prometheus-agent"}', start_ms, end_ms)[0]
            results[2].samples = export_count(vm, '{job="vmagent"}', start_ms, end_ms)[0]
            # The floors store the agent's rows (the one-row floor one per round): per sample is
            # per agent sample for both, so the ratios compare the same work.
            for r in results[3:]:
                r.samples = results[0].samples
            for r in results:
                r.syncs = sync_calls(r.proc.trace, start_s, end_s)
            fs = {name: d.fstype for name, d in where.items()}
            return results, window_s, fs, mirror
    finally:
        vm.stop()


def _check_alive(procs: list[Proc], mirror: Mirror) -> None:
    for p in procs:
        if not p.alive():
            raise RuntimeError(f"{p.name} exited with {p.popen.returncode} during the run")
    if mirror.error is not None:
        raise RuntimeError(f"the mirror to the floors failed: {mirror.error!r}")


@contextlib.contextmanager
def _stopped(procs: list[Proc]) -> Iterator[None]:
    """Every process stopped (before its filesystem is unmounted); a failed one's log shown."""
    try:
        yield
    except RuntimeError:
        for p in procs:
            if not p.alive():
                log = p.trace.with_suffix(".log") if p.trace else None
                if log is not None and log.exists():
                    print(f"--- {p.name} log:\n" + log.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        for p in procs:
            p.stop()


def report(results: list[Result], window_s: float, fs: dict[str, str], warmup: float,
           mirrored: tuple[int, int, int] = (0, 0, 0), steady: bool = False) -> str:
    """``mirrored``: (agent commits seen in its WAL, of which with samples, rows) in the window."""
    per_min = 60.0 / window_s
    rows: list[list[object]] = []
    for r in results:
        p = r.proc
        device = p.device_bytes
        syncs = sum(r.syncs.values()) if r.syncs is not None else None
        commits = r.syncs.get("fdatasync wal", 0) + r.syncs.get("fsync wal", 0) if r.syncs is not None else None
        rows.append([p.name, r.samples / window_s, p.write_bytes / window_s / 1024,
                     p.write_bytes / window_s * 86400 / 1e6, r.per_sample(p.write_bytes),
                     "" if device is None else device / window_s / 1024,
                     "" if device is None else device / window_s * 86400 / 1e6, r.per_sample(device),
                     "" if syncs is None else syncs * per_min,
                     "" if commits is None or p.name in ("prometheus", "vmagent") else commits * per_min])
    headers = ["process", "samples/s", "write_bytes KB/s", "MB/day", "B/sample", "device KB/s (journal incl.)",
               "device MB/day", "device B/sample", "fsyncs/min", "commits/min"]
    lines = [table(headers, rows), ""]
    lines.append(f"window {window_s:.0f} s after a {warmup:.0f} s warm-up"
                 + (" and the agent's WAL's first full pass (--steady; the floors' WALs were taken through one "
                    "at their start)" if steady else "") + "; data on: "
                 + "; ".join(f"{name} {where}" for name, where in fs.items()))
    if not any(r.proc.device_bytes is not None for r in results):
        lines.append("no loop device (needs root and losetup): device writes not measured; write_bytes reads 0 "
                     "on tmpfs and may on overlayfs")
    for r in results:
        if r.syncs:
            lines.append(f"{r.proc.name} sync calls per minute by file: "
                         + ", ".join(f"{k} {v * per_min:.1f}" for k, v in sorted(r.syncs.items())))
    agent = results[0]
    commits, with_rows, rows_sent = mirrored
    if with_rows:
        lines.append(f"floors: the agent's commits in its WAL in the window {commits * per_min:.1f}/min, "
                     f"{with_rows * per_min:.1f}/min with samples, {rows_sent / with_rows:.1f} rows each "
                     f"({rows_sent} rows; the agent stored {agent.samples} with a timestamp in the window); "
                     "; the floors, fed those commits:")
        lines += [f"  {name}: {what}" for name, what in FLOORS.items()]
    floors = {r.proc.name: r for r in results if r.proc.name.startswith("floor")}
    for name, floor in floors.items():
        for what, a, f in (("write_bytes", agent.proc.write_bytes, floor.proc.write_bytes),
                           ("device", agent.proc.device_bytes, floor.proc.device_bytes)):
            if a is not None and f:
                lines.append(f"agent/{name} {what}: {a / f:.2f}x")
    for r in results:
        if r.where and r.proc.name != "agent":
            lines.append(f"{r.proc.name}: " + r.where.replace("agent WAL", "WAL"))
    if agent.files_end:
        lines.append("agent files (start -> end of window, bytes): "
                     + ", ".join(f"{k} {agent.files_start.get(k, 0):,} -> {v:,}" for k, v in agent.files_end.items()))
    if agent.where:
        lines.append(agent.where)
    b = agent.per_sample(agent.proc.write_bytes)
    if isinstance(b, float):
        lines.append(f"agent bytes written per sample: {b:.1f} (target <= {TARGET_BYTES_PER_SAMPLE:.0f}): "
                     + ("met" if b <= TARGET_BYTES_PER_SAMPLE else "NOT met"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bytes written per sample: agent, Prometheus agent mode, vmagent")
    parser.add_argument("--seconds", type=float, default=300.0, help="whole run, warm-up included")
    parser.add_argument("--warmup", type=float, default=40.0, help="past the first self-metrics round (30 s)")
    parser.add_argument("--quick", action="store_true", help="~40 s run, 10 s warm-up (CI smoke)")
    parser.add_argument("--no-loop", action="store_true", help="plain temp dirs, no loop-mounted ext4 images")
    parser.add_argument("--steady", action="store_true",
                        help="open the window once the agent's WAL has been through a full pass (~16 min at "
                             "the shipped config; the run still ends at --seconds)")
    parser.add_argument("--floor-writer", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--floor-ready", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--floor-name", choices=list(FLOORS), default="floor", help=argparse.SUPPRESS)
    parser.add_argument("--floor-prewrap", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override an agent config key (what-ifs), e.g. --set storage.wal_checkpoint_interval=1h")
    args = parser.parse_args(argv)
    if args.floor_writer is not None:
        return floor_writer(args.floor_writer, args.floor_name, args.floor_prewrap, args.floor_ready)
    seconds, warmup = (40.0, 10.0) if args.quick else (args.seconds, args.warmup)
    if seconds <= warmup + 5:
        parser.error("--seconds must exceed the warm-up by at least 5 s")
    extra: dict[str, dict[str, object]] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not name:
            parser.error(f"--set {item}: expected SECTION.KEY=VALUE")
        extra.setdefault(section, {})[name] = yaml.safe_load(value)
    loop = not args.no_loop and can_loop_mount()
    with temp_dir("bench-flash-") as directory:
        results, window_s, fs, mirror = run(seconds, warmup, Path(directory), loop, extra, args.steady)
    print(report(results, window_s, fs, warmup, mirror.window, args.steady))
    return 0 if all(r.samples for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
