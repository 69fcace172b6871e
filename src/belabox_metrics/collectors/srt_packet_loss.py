"""`srt.packet_loss`: the seed's second metric, SRT packet loss in percent.

Milestone 1 ships the interface and a labelled mock (``source="mock"``). Real sources
(SRT server stats, srt-live-transmit, belaUI) come in the `srt` collector family; until an
entry names one, ``mock: true`` is required so mock data is never produced by accident.
"""

from __future__ import annotations

import random

from belabox_metrics.collectors.base import (
    CollectorContext,
    CollectorSpec,
    MetricSettings,
    register,
)
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.validation import Reader

METRIC = "srt.packet_loss"


def parse_options(reader: Reader) -> None:
    if reader.data.get("enabled", True) is not False and reader.data.get("mock") is not True:
        reader.fail("mock", "srt.packet_loss has no real source configured",
                    "set `mock: true` for labelled mock data, or disable this entry "
                    "(`enabled: false`) until an SRT source is set up")


class SrtPacketLossMock:
    def __init__(self, settings: MetricSettings, ctx: CollectorContext,
                 rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def collect(self, now_ms: int) -> list[Sample]:
        # The seed's mock: loss on one interval in ten, 0-5 %.
        loss = round(self.rng.random() * 5.0, 2) if self.rng.random() < 0.1 else 0.0
        return [Sample(METRIC, loss, now_ms, make_labels(source="mock"))]


SPEC = register(CollectorSpec(
    name=METRIC,
    factory=SrtPacketLossMock,
    description="SRT packet loss percent over the interval (mock until a source is set up)",
    default_interval=5.0,
    parse_options=parse_options,
    supports_mock=True,
))
