"""`metrics-collector status`: what an operator wants to see over SSH, in one screen.

The running agent is asked over its loopback health endpoint; the database is read
directly, so the command also works when the agent is stopped.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request

from belabox_metrics.config import Settings
from belabox_metrics.logs import redact_url
from belabox_metrics.store.migrations import SchemaError
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.timefmt import format_ms
from belabox_metrics.validation import ConfigError, parse_duration


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def _health(settings: Settings) -> dict[str, object] | None:
    if not settings.health.listen:
        return None
    try:
        with urllib.request.urlopen(f"http://{settings.health.listen}/health", timeout=2) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as error:
        return json.loads(error.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def status(settings: Settings, window: str) -> int:
    try:
        window_s = parse_duration(window, "--window")
    except ConfigError as exc:
        print(f"metrics-collector: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    destination = redact_url(settings.remote.url)
    print(f"device {settings.device.id}   database {settings.storage.path}")

    doc = _health(settings)
    if doc is None:
        where = settings.health.listen or "health endpoint disabled"
        print(f"agent:    not answering ({where}): stopped, starting, or health.listen is off")
    else:
        components = doc.get("components", {})
        assert isinstance(components, dict)
        print(f"agent:    {str(doc.get('status')).upper()}   (since {doc.get('started')}, "
              f"version {doc.get('version')})")
        for name in ("collectors", "uploader", "storage", "time"):
            part = components.get(name, {})
            if isinstance(part, dict) and part.get("status") != "ok":
                print(f"  {name}: {part.get('status')}: {part.get('reason', '')}")
        uploader = components.get("uploader", {})
        if isinstance(uploader, dict):
            print(f"upload:   last success {uploader.get('last_success') or 'never'}; "
                  f"last error: {uploader.get('last_error') or 'none'}")
        collectors = components.get("collectors", {})
        if isinstance(collectors, dict):
            for name, state in (collectors.get("collectors") or {}).items():
                if isinstance(state, dict) and state.get("last_error"):
                    print(f"  collector {name} failing: {state['last_error']}")

    if not os.path.exists(settings.storage.path):
        print("storage:  no database yet")
        return 0 if doc is not None else 1
    try:
        queue = SampleQueue.open(settings.storage.path)
    except (SchemaError, sqlite3.Error) as exc:
        print(f"storage:  cannot read the database: {exc}")
        return 1
    try:
        stats = queue.stats(destination)
        latest = queue.latest_per_series(int((now - window_s) * 1000))
        held = queue.held_count()
    finally:
        queue.close()
    oldest = (f", oldest from {_ago(now - stats.oldest_pending_ms / 1000)}"
              if stats.oldest_pending_ms is not None else "")
    print(f"backlog:  {stats.pending} samples not yet uploaded to {destination}{oldest}")
    print(f"storage:  {stats.samples} samples in {stats.series} series, {stats.db_bytes / 1e6:.1f} MB "
          f"(+{stats.wal_bytes / 1e6:.1f} MB WAL), {stats.dead_letters} dead letters"
          + (f", {held} held until the clock is trusted" if held else ""))
    print(f"metrics seen in the last {window}:")
    if not latest:
        print("  none")
    width = max((len(r.sample.name) for r in latest), default=10)
    for row in latest:
        sample = row.sample
        labels = ",".join(f"{k}={v}" for k, v in sample.labels)
        value = f"{sample.value:.12g}" if sample.value is not None else repr(sample.text)
        print(f"  {sample.name:<{width}}  {value:>12}  {_ago(now - row.ts / 1000):>9}  {labels}")
    print(f"(as of {format_ms(int(now * 1000))})")
    return 0 if doc is not None else 1
