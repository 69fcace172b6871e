"""`metrics-collector`: run the agent, check a config, look at the stored data, or try it
all on a dev box with `metrics-collector dev`.

Exit codes: 0 ok, 1 runtime failure (another instance running, unusable database),
2 bad usage or bad config (one line naming the key and the fix, never a traceback).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence

from belabox_metrics import __version__, logs
from belabox_metrics.cli import ArgumentParser
from belabox_metrics.config import DEFAULT_CONFIG_PATH, Settings, load_config
from belabox_metrics.naming import exact
from belabox_metrics.runtime.startup import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, run
from belabox_metrics.store.migrations import SchemaError
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.timefmt import format_ms
from belabox_metrics.validation import ConfigError, format_duration


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="metrics-collector",
        description="BELABOX metrics agent: collect host and SRT metrics, store them in SQLite, "
                    "forward them exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", default=None, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # Subcommands accept --config too; SUPPRESS keeps a value given before the subcommand.
    config_help = f"config file (default {DEFAULT_CONFIG_PATH})"
    run = sub.add_parser("run", help="run the agent (the default command)")
    run.add_argument("--config", default=argparse.SUPPRESS, help=config_help)

    check = sub.add_parser("check-config", help="validate a config file and what it needs on this machine, "
                                                "then exit (2 on what `run` would refuse)")
    check.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    check.add_argument("--strict", action="store_true",
                       help="exit 1 on warnings too (a collector with nothing to read, a busy health port)")

    query = sub.add_parser("query", help="print recent samples from the local database")
    query.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    query.add_argument("--metric", default=None, help="only this metric name, e.g. cpu.temperature")
    query.add_argument("--last", type=int, default=20, help="how many samples (default 20)")

    status = sub.add_parser("status", help="at a glance: health, backlog, last upload, last value of each metric")
    status.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    status.add_argument("--window", default="10m", help="show metrics seen within this window (default 10m)")
    status.add_argument("--all", action="store_true", dest="show_all",
                        help="also the last value of every series (histograms: count, mean, p95)")

    verify = sub.add_parser("verify", help="check that what was recorded as sent is in VictoriaMetrics, once")
    verify.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    verify.add_argument("--since", default="1h", help="how far back to check, e.g. 30m, 6h, 2d (default 1h)")
    verify.add_argument("--settle", default="30s",
                        help="skip samples newer than this: VictoriaMetrics makes fresh rows searchable "
                             "with a delay (default 30s, like its -search.latencyOffset)")
    verify.add_argument("--query-url", default=None,
                        help="where to read back from when it is not where the box writes, e.g. a "
                             "cluster's vmselect: http://vmselect:8481/select/<accountID>/prometheus "
                             "(default: derived from remote.url)")
    verify.add_argument("--query-token-file", default=None,
                        help="bearer token for --query-url (mode 0600; default remote.token_file): a "
                             "device's token that may only import cannot export")

    downgrade = sub.add_parser(
        "downgrade-db", help="before starting an older version: make the database readable by it, "
                             "keeping what was recorded (install.sh --rollback runs this)")
    downgrade.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    downgrade.add_argument("--schema", type=int, required=True,
                           help="the newest schema version the older version knows")
    downgrade.add_argument("--reads-compat", action="store_true",
                           help="the older version reads schema_compat: a newer schema that only "
                                "added things is left as it is")

    from belabox_metrics.cli import deadletters, dev

    deadletters.add_parser(sub, config_help)
    dev.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `metrics-collector query | head`: the reader left; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "run"
    config_path = args.config or DEFAULT_CONFIG_PATH
    if command == "dev":
        from belabox_metrics.cli import dev

        return dev.main(args)
    try:
        settings = load_config(config_path)
    except ConfigError as exc:
        print(f"metrics-collector: config error in {config_path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if command == "check-config":
        return check_config(settings, strict=args.strict)
    if command in ("query", "status", "dead-letters"):
        # They print text from elsewhere (the agent's health, stored text, refusal reasons):
        # no configured secret may show, whatever an older version stored.
        from belabox_metrics.secrets import register_configured_secrets

        register_configured_secrets(settings)
        sys.stdout = logs.MaskingWriter(sys.stdout)
    if command == "query":
        return query(settings, args.metric, args.last)
    if command == "status":
        from belabox_metrics.cli.status import status

        return status(settings, args.window, args.show_all)
    if command == "verify":
        return verify(settings, args.since, args.settle, args.query_url, args.query_token_file)
    if command == "downgrade-db":
        return downgrade_db(settings, args.schema, args.reads_compat)
    if command == "dead-letters":
        from belabox_metrics.cli import deadletters

        return deadletters.main(settings, args)
    return run(settings)


def check_config(settings: Settings, strict: bool = False) -> int:
    """Everything `run` refuses is an error here too (exit 2); what it would run DEGRADED
    with is a warning (exit 0, or 1 with --strict)."""
    from belabox_metrics.runtime.preflight import check_all

    found = check_all(settings)
    for error in found.errors:
        print(f"metrics-collector: config error in {settings.source}: {error}", file=sys.stderr)
    if found.errors:
        return EXIT_USAGE
    enabled = ", ".join(f"{m.name} every {format_duration(m.interval)}" for m in settings.enabled_metrics)
    remote = settings.remote
    print(f"config OK: {settings.source}" + (f" ({len(found.warnings)} warning(s))" if found.warnings else ""))
    print(f"  device:  {settings.device.id}")
    print(f"  storage: {settings.storage.path}")
    print(f"  remote:  {logs.redact_url(remote.url) if remote.enabled else 'disabled'}"
          + (f" every {format_duration(remote.interval)}" if remote.enabled else ""))
    print(f"  metrics: {enabled}")
    print(f"  health:  {settings.health.listen or 'off'}")
    for note in found.notes:
        print(f"  {note}")
    for warning in found.warnings:
        print(f"warning: {warning}")
    return EXIT_FAILURE if strict and found.warnings else EXIT_OK


def downgrade_db(settings: Settings, schema: int, reads_compat: bool) -> int:
    from belabox_metrics.store.downgrade import downgrade
    from belabox_metrics.store.lock import AlreadyRunning

    if schema < 1:
        print(f"metrics-collector: --schema takes a schema version (1 or more), not {schema}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = downgrade(settings.storage.path, schema, reads_compat=reads_compat)
    except AlreadyRunning as exc:
        print(f"metrics-collector: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (SchemaError, sqlite3.Error, OSError) as exc:
        print(f"metrics-collector: cannot downgrade {settings.storage.path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(result.message)
    return EXIT_OK


def query(settings: Settings, metric: str | None, last: int) -> int:
    path = settings.storage.path
    if last < 1:
        print("metrics-collector: --last must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if not os.path.exists(path):
        print(f"metrics-collector: no database at {path} yet: run the agent first "
              "(or check storage.path)", file=sys.stderr)
        return EXIT_FAILURE
    try:
        queue = SampleQueue.open(path)
    except (SchemaError, sqlite3.Error) as exc:
        print(f"metrics-collector: cannot read {path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    destination = logs.redact_url(settings.remote.url)
    try:
        rows = queue.recent(metric, last, destination)
        total, pending = queue.count(), queue.pending_count(destination)
    finally:
        queue.close()
    if not rows:
        which = f" for {metric}" if metric else ""
        print(f"no samples{which} in {path}")
        return EXIT_OK
    table = [("TIMESTAMP (UTC)", "METRIC", "VALUE", "LABELS", "SENT")]
    for row, sent in rows:
        sample = row.sample
        labels = ",".join(f'{k}="{v}"' for k, v in sample.labels)
        value = exact(sample.value) if sample.value is not None else str(sample.text)
        table.append((format_ms(sample.timestamp_ms), sample.name, value, labels, "yes" if sent else "no"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
    print(f"({len(rows)} shown; {total} stored, {pending} not yet uploaded)")
    return EXIT_OK


def verify(settings: Settings, since: str, settle: str = "30s", query_url: str | None = None,
           query_token_file: str | None = None) -> int:
    import time
    import urllib.parse

    from belabox_metrics.secrets import read_secret_file
    from belabox_metrics.upload import verify as audit
    from belabox_metrics.upload.transport import HttpTransport, TransportError
    from belabox_metrics.validation import parse_duration

    try:
        window = parse_duration(since, "--since")
        settle_s = 0.0 if settle.strip() in ("0", "0s") else parse_duration(settle, "--settle")
        headers = {}
        if query_token_file:
            headers["Authorization"] = "Bearer " + read_secret_file(query_token_file, "--query-token-file")
        elif settings.remote.token_file:
            headers["Authorization"] = "Bearer " + read_secret_file(settings.remote.token_file, "remote.token_file")
        if query_url is not None and urllib.parse.urlsplit(query_url).scheme not in ("http", "https"):
            raise ConfigError("--query-url", f"{logs.redact_url(query_url)!r} is not an http:// or https:// URL",
                              "give the vmselect (or vmauth) URL, e.g. http://vmselect:8481/select/0/prometheus")
    except ConfigError as exc:
        print(f"metrics-collector: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if settings.remote.format not in ("vm-jsonl", "remote-write"):
        print("metrics-collector: verify reads back from VictoriaMetrics; remote.format is "
              f"{settings.remote.format!r}, not 'vm-jsonl' or 'remote-write'", file=sys.stderr)
        return EXIT_USAGE
    if not os.path.exists(settings.storage.path):
        print(f"metrics-collector: no database at {settings.storage.path}", file=sys.stderr)
        return EXIT_FAILURE
    since_ms = int((time.time() - window) * 1000)
    destination = logs.redact_url(settings.remote.url)
    queue = SampleQueue.open(settings.storage.path)
    try:
        until_ms = int((time.time() - settle_s) * 1000)
        local = audit.sent_samples(queue, destination, settings.device.id, since_ms, until_ms)
    finally:
        queue.close()
    url = audit.export_url(query_url or settings.remote.url)
    print(f"verifying {len(local)} samples sent since {format_ms(since_ms)} against {logs.redact_url(url)}")
    transport = HttpTransport(timeout=max(60.0, settings.remote.timeout), max_response_bytes=1 << 30,
                              tls=settings.remote.tls, proxy=settings.remote.proxy)
    try:
        counts, values = audit.remote_counts(audit.fetch_export(transport, url, settings.device.id, since_ms,
                                                                headers))
    except (TransportError, audit.ExportError, ValueError) as exc:
        print(f"metrics-collector: cannot export from {logs.redact_url(url)}: {logs.mask_secrets(str(exc))}",
              file=sys.stderr)
        return EXIT_FAILURE
    finally:
        transport.close()
    report = audit.compare(local, counts, values)
    print(f"checked {report.checked}; in VictoriaMetrics for this device: {report.in_remote}; "
          f"missing {len(report.missing)}; duplicated {len(report.duplicated)}; "
          f"value mismatch {len(report.value_mismatch)}")
    for name, labels, ts in report.missing[:10]:
        print(f"  missing: {name}{{{','.join(f'{k}={v!r}' for k, v in labels)}}} @ {format_ms(ts)}")
    for (name, _labels, ts), times in report.duplicated[:10]:
        print(f"  duplicated x{times}: {name} @ {format_ms(ts)}")
    print("OK: every sent sample is there exactly once" if report.ok else "PROBLEMS FOUND")
    return EXIT_OK if report.ok else EXIT_FAILURE
