"""Pure validation of an upload: bytes in, a batch of samples or a PayloadError out.

All or nothing: one bad item refuses the whole request, so a sender never has to guess
which part of a batch was kept. Every message names the field (``metrics[3].value: must
be a finite number``) because the sender's operator reads it in a log far from here.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from belabox_metrics.model import Labels, make_labels
from belabox_metrics.timefmt import parse_ms

MAX_METRICS = 100_000
MAX_LABELS = 32
MAX_LABEL_VALUE_CHARS = 1024
MAX_TIMESTAMP_CHARS = 64
# An unsynced encoder boots in 1970 (or in its image's build year): such samples are
# refused with the reason rather than stored as garbage a dashboard would plot.
MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_FUTURE_MS = 24 * 3600 * 1000

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
METRIC_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]{0,199}")
LABEL_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")

TOP_LEVEL_FIELDS = frozenset({"device_id", "timestamp", "metrics"})
METRIC_FIELDS = frozenset({"name", "value", "timestamp", "labels"})


class PayloadError(ValueError):
    """The request body is not an acceptable upload; ``str(exc)`` says why and where."""


class BodyTooLarge(PayloadError):
    """The (decompressed) body exceeds the size limit."""


@dataclass(frozen=True, slots=True)
class ReceivedSample:
    name: str
    labels: Labels
    timestamp_ms: int
    value: float


@dataclass(frozen=True)
class Batch:
    device_id: str
    sent_at_ms: int
    samples: tuple[ReceivedSample, ...]


def _fail(message: str) -> NoReturn:
    raise PayloadError(message)


def _refuse_constant(name: str) -> NoReturn:
    # json.loads accepts NaN, Infinity and -Infinity literals, which are not JSON.
    _fail(f"body: {name} is not valid JSON (values must be finite numbers)")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # With duplicate keys JSON parsers disagree on which one wins; refuse the ambiguity.
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            _fail(f"body: duplicate key {key[:100]!r} in an object")
        result[key] = value
    return result


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress gzip ``data`` (one or more members) producing at most ``limit`` bytes.

    Output is produced in bounded steps, so a gzip bomb costs ``limit`` bytes of memory,
    never its inflated size. Raises BodyTooLarge past the limit, PayloadError for
    corrupt or truncated data.
    """
    out = bytearray()
    remaining = data
    while remaining:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = remaining
        try:
            while pending:
                # max_length is at least 1 here (0 would mean unlimited).
                out += inflater.decompress(pending, limit + 1 - len(out))
                if len(out) > limit:
                    raise BodyTooLarge(f"body: more than {limit} bytes after gzip decompression")
                pending = inflater.unconsumed_tail
                if inflater.eof:
                    break
        except zlib.error as exc:
            _fail(f"body: invalid gzip data ({exc})")
        if not inflater.eof:
            _fail("body: truncated gzip data")
        remaining = inflater.unused_data
    return bytes(out)


def decode_json(body: bytes) -> object:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys.

    Nesting is bounded twice: the parser raises RecursionError (refused here) long before
    the body limit could exhaust memory, and the validator accepts exactly four levels
    (object > metrics array > metric > labels), refusing any container in a leaf's place.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(f"body: not UTF-8 text (byte {exc.start})")
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys
        )
    except RecursionError:
        _fail("body: JSON nested too deeply")
    except json.JSONDecodeError as exc:
        _fail(f"body: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    except ValueError as exc:  # e.g. an integer with more digits than Python allows
        if isinstance(exc, PayloadError):
            raise
        _fail(f"body: malformed JSON ({exc})")


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        _fail(f"{field}: must be a string, got {_describe(value)}")
    return value


def _utf8(value: str, field: str) -> str:
    # "\ud800" is valid JSON but not storable text: refuse it here, not in SQLite.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail(f"{field}: contains an unpaired surrogate (not valid Unicode)")
    return value


def _timestamp(value: object, field: str, now_ms: int, *, check_range: bool) -> int:
    text = _string(value, field)
    if len(text) > MAX_TIMESTAMP_CHARS or not text.isascii():
        _fail(f"{field}: must be an RFC 3339 timestamp like 2025-10-11T14:30:00.123Z")
    try:
        stamp = parse_ms(text)
    except (ValueError, OverflowError) as exc:
        _fail(f"{field}: {exc}")
    if check_range:
        if stamp < MIN_TIMESTAMP_MS:
            _fail(f"{field}: {text} is before 2000-01-01 (is the sender's clock unsynced?)")
        if stamp > now_ms + MAX_FUTURE_MS:
            _fail(
                f"{field}: {text} is more than 1 day in the future "
                "(is the sender's clock wrong?)"
            )
    return stamp


def _finite_number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(f"{field}: must be a finite number, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        _fail(f"{field}: must be a finite number (integer too large)")
    if not math.isfinite(number):
        _fail(f"{field}: must be a finite number")
    return number


def _labels(value: object, field: str) -> Labels:
    if value is None:
        return ()
    if not isinstance(value, dict):
        _fail(f"{field}: must be an object of string values, got {_describe(value)}")
    if len(value) > MAX_LABELS:
        _fail(f"{field}: has {len(value)} labels, at most {MAX_LABELS} allowed")
    for key, label_value in value.items():
        if not LABEL_KEY_RE.fullmatch(key):
            _fail(f"{field}: key {key[:120]!r} must match [A-Za-z_][A-Za-z0-9_]{{0,99}}")
        item = f"{field}.{key}"
        _utf8(_string(label_value, item), item)
        if len(label_value) > MAX_LABEL_VALUE_CHARS:
            _fail(f"{item}: longer than {MAX_LABEL_VALUE_CHARS} characters")
    return make_labels(value)


def _metric(item: object, field: str, now_ms: int) -> ReceivedSample:
    if not isinstance(item, dict):
        _fail(f"{field}: must be an object, got {_describe(item)}")
    _only_known(item, METRIC_FIELDS, field)
    for required in ("name", "value", "timestamp"):
        if required not in item:
            _fail(f"{field}.{required}: missing")
    name = _string(item["name"], f"{field}.name")
    if not METRIC_NAME_RE.fullmatch(name):
        _fail(f"{field}.name: {name[:220]!r} must match [A-Za-z_][A-Za-z0-9_.:]{{0,199}}")
    value = _finite_number(item["value"], f"{field}.value")
    stamp = _timestamp(item["timestamp"], f"{field}.timestamp", now_ms, check_range=True)
    labels = _labels(item.get("labels"), f"{field}.labels")
    return ReceivedSample(name, labels, stamp, value)


def _only_known(obj: Mapping[str, object], known: frozenset[str], field: str) -> None:
    # A misspelt "lables" must not silently merge two series into one.
    for key in obj:
        if key not in known:
            where = f"{field}." if field else ""
            # Quote anything odd so a crafted key cannot forge lines in the receiver's log.
            shown = key if LABEL_KEY_RE.fullmatch(key) else repr(key[:100])
            expected = ", ".join(sorted(known))
            _fail(f"{where}{shown}: unknown field (expected one of {expected})")


def validate_payload(document: object, now_ms: int) -> Batch:
    """Check a decoded seed-JSON document; ``now_ms`` bounds how far ahead a sample may be."""
    if not isinstance(document, dict):
        _fail(f"body: must be a JSON object, got {_describe(document)}")
    _only_known(document, TOP_LEVEL_FIELDS, "")
    for required in ("device_id", "timestamp", "metrics"):
        if required not in document:
            _fail(f"{required}: missing")
    device_id = _string(document["device_id"], "device_id")
    if not DEVICE_ID_RE.fullmatch(device_id):
        _fail(f"device_id: {device_id[:80]!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")
    # The send time is informational (samples carry their own): it must parse, but an
    # odd value does not refuse samples whose own timestamps are fine.
    sent_at_ms = _timestamp(document["timestamp"], "timestamp", now_ms, check_range=False)
    metrics = document["metrics"]
    if not isinstance(metrics, list):
        _fail(f"metrics: must be an array, got {_describe(metrics)}")
    if len(metrics) > MAX_METRICS:
        _fail(f"metrics: {len(metrics)} items, at most {MAX_METRICS} per request")
    samples = tuple(_metric(item, f"metrics[{i}]", now_ms) for i, item in enumerate(metrics))
    return Batch(device_id, sent_at_ms, samples)


def parse_upload(body: bytes, now_ms: int) -> Batch:
    """Body bytes (already decompressed) to a validated batch, or PayloadError."""
    return validate_payload(decode_json(body), now_ms)
