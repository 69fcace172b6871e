"""`srt.packet_loss`: the seed's second metric, SRT packet loss in percent.

Two forms, one of which the entry must choose:

- ``mock: true``: labelled mock values (``source="mock"``) for a dev box, as in the seed.
- ``sources:`` (the same list as the `srt` collector's): real loss percent from those
  sources, and only that metric. It is an alias kept so the seed's config keeps working;
  the `srt` entry reports loss together with everything else.

Neither means a config error, so mock data is never produced by accident.
"""

from __future__ import annotations

import random
from typing import Any

from belabox_metrics.collectors.base import (
    Collector,
    CollectorContext,
    CollectorSpec,
    MetricSettings,
    register,
)
from belabox_metrics.collectors.srt import SrtCollector, SrtOptions
from belabox_metrics.collectors.srt import parse_options as parse_srt_options
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.validation import Reader

METRIC = "srt.packet_loss"


def parse_options(reader: Reader) -> SrtOptions | None:
    mock = reader.data.get("mock") is True
    if reader.has("sources"):
        if mock:
            reader.fail("mock", "`mock: true` and `sources:` are both set",
                        "remove `mock: true` to use the real sources, or `sources:` for mock data")
        return parse_srt_options(reader)
    if reader.data.get("enabled", True) is not False and not mock:
        reader.fail("mock", "srt.packet_loss has no source configured",
                    "list real `sources:` (see docs/belabox-integration.md), set `mock: true` "
                    "for labelled mock data, or disable this entry (`enabled: false`)")
    return None


class SrtPacketLossMock:
    def __init__(self, settings: MetricSettings, ctx: CollectorContext,
                 rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def collect(self, now_ms: int) -> list[Sample]:
        # The seed's mock: loss on one interval in ten, 0-5 %.
        loss = round(self.rng.random() * 5.0, 2) if self.rng.random() < 0.1 else 0.0
        return [Sample(METRIC, loss, now_ms, make_labels(source="mock"))]


def create(settings: MetricSettings, ctx: CollectorContext) -> Collector:
    options: Any = settings.options
    if isinstance(options, SrtOptions) and not settings.mock:
        return SrtCollector(settings, ctx, only=frozenset({METRIC}))
    return SrtPacketLossMock(settings, ctx)


SPEC = register(CollectorSpec(
    name=METRIC,
    factory=create,
    description="SRT packet loss percent over the interval, from real `sources:` "
                "(or labelled mock values with `mock: true`)",
    default_interval=5.0,
    parse_options=parse_options,
    supports_mock=True,
))
