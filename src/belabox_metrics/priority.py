"""Priority classes P0 ... P3: which upload lane a series goes in, chosen by metric name.

The uploader serves the lanes in order (P0 first); a lane is served only when the ones
before it have nothing pending, so under the (lower) live budget the important series stay
current and the rest takes what bandwidth is left. ``while_live`` can hold classes back
entirely while a stream is live (by default none is held: a dashboard panel should not go
blank because a stream started). Each lane drains oldest first, so every series reaches the
remote in time order. The defaults put what a streamer watches during a stream in P0 (SRT
link health, the BELABOX's own view of its modems and stream, temperatures, the agent's
health), the host's headline gauges in P1, everything else in P2, and cumulative counters
(whose per-second rates are already sent) in P3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from belabox_metrics.naming import promql_name

CLASS_NAMES = ("P0", "P1", "P2", "P3")

DEFAULT_CLASSES: dict[str, tuple[str, ...]] = {
    "P0": (
        "srt.*", "belabox.*", "cpu.temperature", "thermal.zone_celsius",
        "storage.metrics_pending_upload", "storage.dropped_samples_total",
        "uploader.upload_failures_total", "uploader.stream_live", "time.skew_ms",
    ),
    "P1": (
        "cpu.usage_percent", "memory.*", "system.load",
        "network.receive_bytes_per_second", "network.transmit_bytes_per_second",
    ),
    "P2": (),
    "P3": ("*_total",),
}


@dataclass(frozen=True)
class PrioritySettings:
    # Patterns per class, P0 first. fnmatch-style (`*`, `?`, `[...]`), matched against the
    # metric name as configured (`srt.rtt_seconds`) and as VictoriaMetrics names it
    # (`srt_rtt_seconds`). The first class with a matching pattern wins.
    classes: tuple[tuple[str, ...], ...] = tuple(DEFAULT_CLASSES.values())
    default_class: int = 2
    while_live: tuple[int, ...] = (0, 1, 2, 3)

    def lanes(self, live: bool) -> tuple[int, ...]:
        return self.while_live if live else tuple(range(len(CLASS_NAMES)))


def class_index(name: str) -> int:
    """'P1' -> 1; ValueError for anything else."""
    if name in CLASS_NAMES:
        return CLASS_NAMES.index(name)
    raise ValueError(f"{name!r} is not a priority class (use one of {', '.join(CLASS_NAMES)})")


def classifier(settings: PrioritySettings) -> Callable[[str], int]:
    """name -> class index, memoised (a few hundred names at most)."""
    known: dict[str, int] = {}

    def classify(name: str) -> int:
        found = known.get(name)
        if found is None:
            promql = promql_name(name)
            found = next((index for index, patterns in enumerate(settings.classes)
                          if any(fnmatchcase(name, p) or fnmatchcase(promql, p) for p in patterns)),
                         settings.default_class)
            known[name] = found
        return found

    return classify
