"""Is a stream live? The SRT/BELABOX collectors say so, and the uplink then belongs to the video.

Three states: ``live`` (a collector reported a stream up and sending within ``hold``
seconds), ``idle`` (every collector that could report a stream has answered and none did),
and ``unknown``: after a start or restart, until each such collector has answered once (or
``settle`` seconds have passed). An agent restarted by the watchdog or an upgrade in the
middle of a stream must not spend its first seconds at the idle budget and put its whole
backlog onto the cellular uplink at once, so ``unknown`` is treated as live: the live
budget applies until the collectors have spoken.

A collector has answered when one of its rounds returned a live signal (a stream
connected or not: its value says which) or failed outright (nothing reachable to stream
through). A round with no live signal at all (a source still connecting, or only a baseline)
does not count: it says nothing about the stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from belabox_metrics.clock import Clock
from belabox_metrics.model import Sample
from belabox_metrics.selfmetrics import Family

# Samples that say a stream is up and sending (any value above 0) or not (0).
LIVE_SIGNALS = frozenset({"belabox.streaming_live", "srt.stream_connected", "srt.send_rate_bits_per_second",
                          "srt.receive_rate_bits_per_second"})

LIVE, IDLE, UNKNOWN = "live", "idle", "unknown"


class StreamLiveness:
    """The one owner of "is a stream live": fed by the collection loop, read by the
    bandwidth budget, the priority lanes, health and self-metrics."""

    def __init__(self, clock: Clock, *, hold: float, awaited: Iterable[str] = (),
                 settle: float = 30.0) -> None:
        self.clock = clock
        self.hold = hold
        # Collectors that can report a stream and have not answered yet since start.
        self.awaited = set(awaited)
        self.settle_until = clock.monotonic() + settle
        self.live_until: float | None = None

    def observe(self, collector: str, samples: Sequence[Sample] | None) -> None:
        """One collector's round: its samples, or None when it failed."""
        if samples is None:
            self.awaited.discard(collector)
            return
        signalled = False
        for sample in samples:
            if sample.name in LIVE_SIGNALS:
                signalled = True
                if sample.value is not None and sample.value > 0:
                    # Live until the collectors stop saying so for a while (they poll every few s).
                    self.live_until = self.clock.monotonic() + self.hold
                    break
        if signalled:
            self.awaited.discard(collector)

    def state(self) -> str:
        now = self.clock.monotonic()
        if self.live_until is not None and now < self.live_until:
            return LIVE
        if self.awaited and now < self.settle_until:
            return UNKNOWN
        return IDLE

    def live(self) -> bool:
        """Whether the live budget applies: while live, and while not known yet."""
        return self.state() != IDLE

    def known(self) -> bool:
        return self.state() != UNKNOWN

    def families(self) -> list[Family]:
        return [
            Family("uploader.stream_live", "gauge",
                   "1 while a stream is up and sending, or not known yet after a start: the lower "
                   "live bandwidth budget applies.", [((), 1.0 if self.live() else 0.0)]),
            Family("uploader.stream_state_known", "gauge",
                   "0 after a start until every SRT/BELABOX collector has answered once "
                   "(the live budget applies meanwhile), then 1.", [((), 1.0 if self.known() else 0.0)]),
        ]
