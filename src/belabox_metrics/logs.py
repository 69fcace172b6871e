"""Structured logging on the standard library (structlog would cost ~13 MB of RSS).

``event(log, level, message, **fields)`` attaches context fields; the JSON formatter writes
one object per line (for journald), the console formatter ``message key=value ...`` for a
terminal. Secrets registered with ``register_secret`` are masked in every record, whatever
code logs them, and URLs are logged through ``redact_url``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

ROOT_LOGGER = "belabox_metrics"
_secrets: set[str] = set()
_longest_first: tuple[str, ...] = ()  # a secret inside another (a password in user:password) after it
_secrets_lock = threading.Lock()
MASK = "***"


def register_secret(value: str) -> None:
    """Mask ``value`` wherever it would appear in a log line from now on."""
    global _longest_first
    if value and len(value) >= 4:
        with _secrets_lock:
            if value not in _secrets:
                _secrets.add(value)
                _longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def mask_secrets(text: str) -> str:
    """``text`` with every registered secret replaced by ***."""
    return _mask(text)


def foreign_text(data: bytes | str, limit: int = 200) -> str:
    """Text from elsewhere (an error body, an exception) fit to show on the agent's surfaces:
    secrets masked over the whole text first, then cut to ``limit`` characters, so a cut
    never leaves half a token unmasked (an auth proxy may echo the credential it refused)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return _mask(text)[:limit]


def _mask(text: str) -> str:
    for secret in _longest_first:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class MaskingWriter:
    """A text stream that masks the registered secrets in everything written to it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(_mask(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()


def redact_url(url: str) -> str:
    """Drop user:password@ and the query string (tokens travel there) from a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def event(log: logging.Logger, level: int, message: str, **fields: Any) -> None:
    log.log(level, message, extra={"fields": fields})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, tz=timezone.utc)
        out: dict[str, Any] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            out.setdefault(key, value)
        if record.exc_info and record.exc_info[0] is not None:
            out.setdefault("error_type", record.exc_info[0].__name__)
            out["stack"] = self.formatException(record.exc_info)
        return _mask(json.dumps(out, default=str, ensure_ascii=False))


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info and record.exc_info[0] is not None:
            line += "\n" + self.formatException(record.exc_info)
        return _mask(line)


def choose_format(requested: str, stream: TextIO) -> str:
    if requested != "auto":
        return requested
    # Under systemd, stdout is the journal: JSON. On a terminal: readable lines.
    if os.environ.get("JOURNAL_STREAM") or not stream.isatty():
        return "json"
    return "console"


def setup(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> logging.Logger:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if choose_format(fmt, stream) == "json" else ConsoleFormatter())
    root = logging.getLogger(ROOT_LOGGER)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    return root


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"{ROOT_LOGGER}.{name}")


class RepeatLimiter:
    """Log an identical warning once, then at most once a ``period`` with how many were
    held back: a destination refusing every request must not write a line per request
    (journal wear on an SD card, and the first line already says what is wrong).

    ``key`` says what makes two warnings identical (message and error, not batch ids).
    ``now`` is a monotonic clock in seconds (injected, so tests need no sleeps)."""

    def __init__(self, now: Callable[[], float], period: float = 60.0, max_keys: int = 64) -> None:
        self.now = now
        self.period = period
        self.max_keys = max_keys
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (last written, held back since)

    def log(self, log: logging.Logger, level: int, key: str, message: str, **fields: Any) -> bool:
        """Write the record unless an identical one was written less than ``period`` ago.
        Returns whether it was written; a written repeat carries ``repeated`` (how many
        identical ones were held back since the last one written)."""
        now = self.now()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.period:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if seen is not None and seen[1]:
            fields = {**fields, "repeated": seen[1]}
        if seen is None and len(self._seen) >= self.max_keys:
            # Bounded: forget the key written longest ago.
            del self._seen[min(self._seen, key=lambda k: self._seen[k][0])]
        self._seen[key] = (now, 0)
        event(log, level, message, **fields)
        return True
