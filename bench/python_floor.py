"""The least a Python process can do for the agent's job: a floor to measure the agent against.

    python bench/python_floor.py --db F --url http://127.0.0.1:PORT/api/v1/import --device-id ID

Stdlib only, one thread, no configuration, validation, priorities, health, logs or self-metrics:
every ``--round`` seconds it reads the /proc and /sys files the host collectors read, takes
numbers from them as the round's samples (``--per-round`` of them, plus ``--every-sixth``
more every sixth round, as the agent's 30 s system and self-metrics add), stores the round in
SQLite (WAL, ``synchronous=FULL``: one fsync'd commit, the durability the agent promises) and
every ``--upload`` seconds sends what is unsent as VictoriaMetrics JSON lines (gzip 6) over
one keep-alive connection, then records the cursor in one fsync'd commit. That is the work
no implementation of the agent can skip in CPython; bench_footprint runs it beside the agent
and node_exporter + vmagent and divides its CPU by the samples VictoriaMetrics received.
SIGTERM ends it after a last upload.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import http.client
import json
import signal
import sqlite3
import time
import urllib.parse

FILES = ("/proc/stat", "/proc/meminfo", "/proc/diskstats", "/proc/net/dev", "/proc/loadavg", "/proc/uptime")


def numbers(paths: list[str], wanted: int) -> list[float]:
    """The first ``wanted`` numbers found in the files, cycling if they hold fewer."""
    found: list[float] = []
    for path in paths:
        try:
            with open(path) as handle:
                text = handle.read()
        except OSError:
            continue
        for token in text.split():
            if token.isdigit():
                found.append(float(token))
    if not found:
        found = [0.0]
    return [found[i % len(found)] for i in range(wanted)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--url", required=True, help="VictoriaMetrics /api/v1/import")
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--round", type=float, default=5.0)
    parser.add_argument("--upload", type=float, default=10.0)
    # The agent's mix at the default config on a 2-vCPU VM: ~47 host samples per 5 s round on
    # average, ~133 more (system, self-metrics) every 30 s.
    parser.add_argument("--per-round", type=int, default=47)
    parser.add_argument("--every-sixth", type=int, default=133)
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL", "OFF"), default="FULL",
                        help="NORMAL/OFF: no fsync per commit (a what-if: durability on power loss is gone)")
    args = parser.parse_args(argv)

    paths = list(FILES) + sorted(glob.glob("/sys/devices/system/cpu/cpufreq/policy*/scaling_cur_freq")) \
        + sorted(glob.glob("/sys/class/thermal/thermal_zone*/temp"))
    db = sqlite3.connect(args.db, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={args.synchronous}")
    db.execute("CREATE TABLE IF NOT EXISTS samples (ts INTEGER, series INTEGER, value REAL, "
                "PRIMARY KEY (ts, series)) WITHOUT ROWID")
    db.execute("CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY, ts INTEGER, series INTEGER)")
    db.execute("INSERT OR IGNORE INTO cursor VALUES (1, -1, -1)")
    url = urllib.parse.urlsplit(args.url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    heads: dict[int, str] = {}

    def head(series: int) -> str:
        text = heads.get(series)
        if text is None:
            text = heads[series] = json.dumps({"__name__": f"floor_{series}", "device_id": args.device_id})
        return text

    def upload() -> None:
        last_ts, last_series = db.execute("SELECT ts, series FROM cursor WHERE id = 1").fetchone()
        rows = db.execute("SELECT ts, series, value FROM samples WHERE (ts, series) > (?, ?) "
                          "ORDER BY ts, series LIMIT 10000", (last_ts, last_series)).fetchall()
        if not rows:
            return
        by_series: dict[int, tuple[list[float], list[int]]] = {}
        for ts, series, value in rows:
            values, stamps = by_series.setdefault(series, ([], []))
            values.append(value)
            stamps.append(ts)
        body = gzip.compress("".join(
            f'{{"metric":{head(s)},"values":{json.dumps(v)},"timestamps":{json.dumps(t)}}}\n'
            for s, (v, t) in by_series.items()).encode(), 6)
        try:
            connection.request("POST", url.path, body, {"Content-Encoding": "gzip"})
            answer = connection.getresponse()
            answer.read()
        except OSError:
            connection.close()
            return
        if answer.status // 100 == 2:
            db.execute("UPDATE cursor SET ts = ?, series = ? WHERE id = 1", rows[-1][:2])

    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    next_round = time.monotonic()
    next_upload = next_round + args.upload
    rounds = 0
    while not stopping:
        now = time.monotonic()
        if now < min(next_round, next_upload):
            time.sleep(min(next_round, next_upload) - now)
            continue
        if now >= next_round:
            ts = int(time.time() * 1000)
            wanted = args.per_round + (args.every_sixth if rounds % 6 == 0 else 0)
            values = numbers(paths, wanted)
            db.execute("BEGIN")  # one fsync'd commit per round
            db.executemany("INSERT OR IGNORE INTO samples VALUES (?, ?, ?)",
                           [(ts, series, value) for series, value in enumerate(values)])
            db.execute("COMMIT")
            rounds += 1
            next_round += args.round
        if now >= next_upload:
            upload()
            next_upload += args.upload
    upload()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
