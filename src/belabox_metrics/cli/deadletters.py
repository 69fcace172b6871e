"""`metrics-collector dead-letters`: list the samples set aside as refused, and put them
back in the queue once the cause is fixed.

    metrics-collector dead-letters [list] [--since 2h] [--metric NAME] [--last 50]
    metrics-collector dead-letters requeue (--all | --since 2h | --metric NAME)

Both work while the agent runs: they take no process lock (the agent holds it) and make
their change in one SQLite transaction, which the running upload thread sees on its next
claim. A requeued sample is sent once more, ahead of the backlog; if the destination still
refuses it, it becomes a dead letter again.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time

from belabox_metrics.cli import ArgumentParser
from belabox_metrics.config import Settings
from belabox_metrics.logs import redact_url
from belabox_metrics.store.migrations import SchemaError
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.timefmt import format_ms
from belabox_metrics.validation import ConfigError, parse_duration

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[ArgumentParser], config_help: str) -> None:
    parser = sub.add_parser("dead-letters", help="list samples set aside as refused; requeue them once fixed")
    parser.add_argument("action", nargs="?", choices=("list", "requeue"), default="list",
                        help="list (default) or requeue: send them again, in order, ahead of the backlog")
    parser.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    parser.add_argument("--since", default=None, help="only those set aside within this window, e.g. 2h, 3d")
    parser.add_argument("--metric", default=None, help="only this metric name, e.g. cpu.temperature")
    parser.add_argument("--all", action="store_true", help="requeue: every dead letter of remote.url")
    parser.add_argument("--last", type=int, default=50, help="list: how many to show, newest (default 50)")


def main(settings: Settings, args: argparse.Namespace) -> int:
    since_ms = None
    try:
        if args.since is not None:
            since_ms = int((time.time() - parse_duration(args.since, "--since")) * 1000)
    except ConfigError as exc:
        print(f"metrics-collector: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "requeue" and not (args.all or args.since or args.metric):
        print("metrics-collector: dead-letters requeue needs --all, --since or --metric "
              "(say which ones go back)", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "list" and args.last < 1:
        print("metrics-collector: --last must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    path = settings.storage.path
    if not os.path.exists(path):
        print(f"metrics-collector: no database at {path} yet: run the agent first "
              "(or check storage.path)", file=sys.stderr)
        return EXIT_FAILURE
    destination = redact_url(settings.remote.url)
    try:
        queue = SampleQueue.open(path)
    except (SchemaError, sqlite3.Error) as exc:
        print(f"metrics-collector: cannot read {path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if args.action == "requeue":
            moved = queue.requeue_dead_letters(destination, since_ms, args.metric)
            left = len(queue.dead_letter_entries())
            print(f"requeued {moved} dead letters for {destination}: the agent sends them on its next "
                  f"upload, ahead of the backlog; {left} dead letters left")
            return EXIT_OK
        return _list(queue, destination, since_ms, args.metric, args.last)
    except sqlite3.Error as exc:
        print(f"metrics-collector: {path}: {exc} (nothing was changed)", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        queue.close()


def _list(queue: SampleQueue, destination: str, since_ms: int | None, metric: str | None, last: int) -> int:
    entries = queue.dead_letter_entries(None, since_ms, metric)
    if not entries:
        print("no dead letters")
        return EXIT_OK
    table = [("ID", "SET ASIDE (UTC)", "SAMPLE TIME (UTC)", "METRIC", "VALUE", "LABELS", "REASON")]
    for entry in entries[-last:]:
        sample = entry.row.sample
        value = f"{sample.value:g}" if sample.value is not None else str(sample.text)
        labels = ",".join(f'{k}="{v}"' for k, v in sample.labels)
        where = "" if entry.destination == destination else f" [for {entry.destination}]"
        table.append((str(entry.id), format_ms(entry.created_at_ms), format_ms(sample.timestamp_ms), sample.name,
                      value, labels, " ".join(entry.reason.split())[:160] + where))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join([cell.ljust(widths[i]) for i, cell in enumerate(r[:-1])] + [r[-1]]).rstrip())
    mine = sum(1 for e in entries if e.destination == destination)
    print(f"({min(last, len(entries))} shown of {len(entries)}; {mine} for {destination}. "
          "Fix the cause, then: metrics-collector dead-letters requeue --all)")
    return EXIT_OK
