"""Shared pieces of the host collectors: counter deltas, name filters, label caches.

Kernel counters reset (an interface deleted and re-created when a USB modem re-enumerates,
a disk re-plugged) and, on 32-bit kernels, wrap. A decrease can be either; the new value
is then the best estimate of what happened since the reset, and a rate is never negative.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import Any

from belabox_metrics.model import Labels, make_labels


def counter_deltas(previous: Sequence[int], current: Sequence[int]) -> tuple[list[int], bool]:
    """Per-field increase since ``previous``; any decrease means the counters were reset,
    and then every delta is the current value (the counters restarted from zero)."""
    deltas = [c - p for p, c in zip(previous, current, strict=True)]
    if min(deltas, default=0) < 0:
        return list(current), True
    return deltas, False


def elapsed_seconds(previous: float | None, now: float) -> float | None:
    """Interval length from two monotonic readings; None when there is no usable interval."""
    if previous is None:
        return None
    elapsed = now - previous
    return elapsed if elapsed > 0 else None


class NameFilter:
    """include/exclude regexes matched against the whole name, with the verdict cached
    (device and interface names repeat every cycle; regexes need not run every cycle)."""

    def __init__(self, include: str | None, exclude: str | None) -> None:
        self.include = re.compile(include) if include else None
        self.exclude = re.compile(exclude) if exclude else None
        self._verdicts: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        verdict = self._verdicts.get(name)
        if verdict is None:
            verdict = (self.include is None or self.include.fullmatch(name) is not None) and (
                self.exclude is None or self.exclude.fullmatch(name) is None
            )
            if len(self._verdicts) > 4096:  # names are few; bound it anyway
                self._verdicts.clear()
            self._verdicts[name] = verdict
        return verdict


class LabelCache:
    """One canonical label tuple per (key, value), built once."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._labels: dict[str, Labels] = {}

    def __call__(self, value: str) -> Labels:
        labels = self._labels.get(value)
        if labels is None:
            if len(self._labels) > 4096:
                self._labels.clear()
            labels = self._labels[value] = make_labels({self.key: value})
        return labels


def import_psutil() -> Any:
    """psutil, imported only on the paths that need it (macOS, comparison tests): the Linux
    agent never loads it (it costs ~2 MB of RSS and reads nothing we cannot read cheaper)."""
    return importlib.import_module("psutil")


def per_second(delta: float, elapsed: float) -> float:
    """A rate rounded to 2 decimals: more digits carry no information (the interval itself is
    measured to a few microseconds) and cost the uplink bytes on every sample."""
    return round(delta / elapsed, 2)
