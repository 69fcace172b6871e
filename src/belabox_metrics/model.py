"""The one data type that flows through the agent: a Sample.

A sample is immutable. Labels are kept as a tuple of (key, value) pairs sorted by key, so
two samples of the same series always compare and serialise identically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import NamedTuple

Labels = tuple[tuple[str, str], ...]


class Sample(NamedTuple):
    """One observation of one series.

    ``value`` is the numeric value; string metrics (modem technology, for example) carry
    ``value=None`` and their text in ``text``: they are stored locally but never sent to a
    numeric time-series database.
    """

    name: str
    value: float | None
    timestamp_ms: int
    labels: Labels = ()
    text: str | None = None

    @property
    def is_text(self) -> bool:
        return self.value is None

    def label(self, key: str) -> str | None:
        for k, v in self.labels:
            if k == key:
                return v
        return None


def make_labels(labels: Mapping[str, str] | None = None, **more: str) -> Labels:
    """Canonical label tuple: sorted by key, values as str."""
    merged: dict[str, str] = dict(labels or {})
    merged.update(more)
    return tuple(sorted((str(k), str(v)) for k, v in merged.items()))


def numeric(name: str, value: float, timestamp_ms: int, labels: Labels = ()) -> Sample:
    return Sample(name, float(value), timestamp_ms, labels)


def text(name: str, value: str, timestamp_ms: int, labels: Labels = ()) -> Sample:
    return Sample(name, None, timestamp_ms, labels, value)


def encode_labels(labels: Labels) -> str:
    """Canonical, compact JSON object text for a label tuple (sorted keys)."""
    if not labels:
        return ""
    return json.dumps(dict(labels), separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def decode_labels(encoded: str) -> Labels:
    if not encoded:
        return ()
    return make_labels(json.loads(encoded))


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
