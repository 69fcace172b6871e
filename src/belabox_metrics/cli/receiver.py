"""metrics-receiver: accept metric uploads over HTTP and store them in SQLite.

    metrics-receiver --listen 127.0.0.1:8080 --db receiver.db [--max-body-bytes N]
                     [--max-buffered-bytes N] [--max-concurrent-decodes N]
                     [--log-level info]

Exit codes: 0 after a clean SIGTERM/SIGINT shutdown, 1 when the server cannot start
(port taken, database unusable), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from typing import NoReturn

from belabox_metrics.store.migrations import SchemaError

PROG = "metrics-receiver"
LOG_LEVELS = ("debug", "info", "warning", "error")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage block; one line says it better in a journal.
        raise UsageError(message)


def _build_parser() -> _Parser:
    from belabox_metrics.receiver.app import (
        BUFFERED_BODIES_DEFAULT,
        DEFAULT_LISTEN,
        DEFAULT_MAX_BODY_BYTES,
        DEFAULT_MAX_CONCURRENT_DECODES,
    )

    parser = _Parser(prog=PROG, description="Accept metric uploads and store them in SQLite.")
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        help=f"HOST:PORT or [IPv6]:PORT to listen on (default {DEFAULT_LISTEN}, loopback)",
    )
    parser.add_argument(
        "--db", required=True, help="SQLite file for received samples (created if missing)"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest accepted body, also after gzip decompression "
        f"(default {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--max-buffered-bytes",
        type=int,
        default=None,
        help="body bytes being received or waiting to be decoded at once, each upload counted "
        "at its Content-Length (chunked: at --max-body-bytes); an upload that does not fit "
        "gets 503 with Retry-After (default "
        f"{BUFFERED_BODIES_DEFAULT} x --max-body-bytes)",
    )
    parser.add_argument(
        "--max-concurrent-decodes",
        type=int,
        default=DEFAULT_MAX_CONCURRENT_DECODES,
        help="bodies decoded and stored at once, the others wait; each costs up to ~10 x "
        f"--max-body-bytes of memory (default {DEFAULT_MAX_CONCURRENT_DECODES})",
    )
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, type=str.lower)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        from belabox_metrics.receiver.app import (
            BUFFERED_BODIES_DEFAULT,
            ListenAddressError,
            parse_listen,
            run,
        )
    except ImportError as exc:  # aiohttp is the `receiver` extra, not an agent dependency
        hint = "install with: pip install 'belabox-metrics[receiver]'"
        print(f"{PROG}: error: {exc}; {hint}", file=sys.stderr)
        return 1
    try:
        args = _build_parser().parse_args(argv)
        parse_listen(args.listen)
        if args.max_body_bytes < 1:
            raise UsageError(f"--max-body-bytes must be at least 1, got {args.max_body_bytes}")
        if args.max_buffered_bytes is None:
            args.max_buffered_bytes = BUFFERED_BODIES_DEFAULT * args.max_body_bytes
        if args.max_buffered_bytes < args.max_body_bytes:
            raise UsageError(
                f"--max-buffered-bytes ({args.max_buffered_bytes}) must be at least "
                f"--max-body-bytes ({args.max_body_bytes}), or the largest body is never read"
            )
        if args.max_concurrent_decodes < 1:
            raise UsageError(
                f"--max-concurrent-decodes must be at least 1, got {args.max_concurrent_decodes}"
            )
        if not args.db.strip():
            raise UsageError("--db must name a file")
    except (UsageError, ListenAddressError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Library chatter (selector choice, connection details) would drown the one-line-per-batch log.
    for noisy in ("aiohttp", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        run(
            args.listen,
            args.db,
            max_body_bytes=args.max_body_bytes,
            max_buffered_bytes=args.max_buffered_bytes,
            max_concurrent_decodes=args.max_concurrent_decodes,
            restore_signals=False,
        )
    except OSError as exc:
        logging.getLogger(PROG).error("cannot listen on %s: %s", args.listen, exc)
        return 1
    except (sqlite3.Error, SchemaError) as exc:
        logging.getLogger(PROG).error("cannot use database %s: %s", args.db, exc)
        return 1
    return 0
