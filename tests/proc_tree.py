"""A fixture /proc tree whose counters grow steadily, for tests that step the clock.

The tree is a copy of a captured one (tests/fixtures/proc-sys/x86-capture: a real machine,
see capture_x86.py there); ``advance_counters`` adds a fixed amount per second of elapsed
time to every counter of /proc/stat, /proc/net/dev and /proc/diskstats, so the true rates
are constant and any spike or reset a test sees was made by the agent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "proc-sys"
CAPTURED = FIXTURES / "x86-capture" / "before"
# Bytes per second every interface's byte counters grow by (10 per 1/100 s, see below).
NET_BYTES_PER_SECOND = 1000


def copy_tree(dest: Path, source: Path = CAPTURED) -> Path:
    shutil.copytree(source, dest)
    return dest


def advance_counters(root: Path, seconds: float) -> None:
    """Every counter in /proc/stat, /proc/net/dev and /proc/diskstats goes up by a fixed
    amount per second: the true rates are constant.

    Each file is rewritten in place with one ``pwrite`` (the collectors keep descriptors
    open and re-read them, so a rename would go unseen, and a truncate-then-write could be
    read empty). Counters only grow, so the text only grows, except on the first call,
    which normalises the spacing and truncates: call ``advance_counters(root, 0)`` before
    anything reads the tree concurrently."""
    k = round(seconds * 100)
    stat = root / "proc" / "stat"
    lines = []
    for line in stat.read_text().splitlines():
        if line.startswith("cpu"):
            name, *fields = line.split()
            # user +k, idle +k: every core 50 % busy over the interval
            fields[0] = str(int(fields[0]) + k)
            fields[3] = str(int(fields[3]) + k)
            line = " ".join([name, *fields])
        lines.append(line)
    _replace(stat, "\n".join(lines) + "\n")
    dev = root / "proc" / "net" / "dev"
    text = dev.read_text().splitlines()
    out, body = text[:2], text[2:]
    for line in body:
        name, _, numbers = line.partition(":")
        out.append(f"{name}: " + " ".join(str(int(n) + 10 * k) for n in numbers.split()))
    _replace(dev, "\n".join(out) + "\n")
    disk = root / "proc" / "diskstats"
    rows = []
    for line in disk.read_text().splitlines():
        major, minor, name, *fields = line.split()
        rows.append(" ".join([major, minor, name, *(str(int(f) + k) for f in fields)]))
    _replace(disk, "\n".join(rows) + "\n")


def _replace(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        data = text.encode()
        os.pwrite(fd, data, 0)
        if os.fstat(fd).st_size > len(data):
            os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
