"""Wire formats, kept apart from the model they format.

``seed_json``: the Milestone 1 payload that ``metrics-receiver`` accepts::

    {"device_id": "belabox-001", "timestamp": "2025-10-11T14:30:00.123Z",
     "metrics": [{"name": "cpu.temperature", "value": 52.3,
                  "timestamp": "2025-10-11T14:30:00.123Z", "labels": {"zone": "soc-thermal"}}]}

``labels`` is omitted when a sample has none. Text samples and non-finite values are never
put on the wire (the receiver would refuse the whole batch).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from belabox_metrics.model import Sample, is_finite
from belabox_metrics.timefmt import format_ms

SEED_JSON_CONTENT_TYPE = "application/json"


def seed_metric(sample: Sample) -> dict[str, object]:
    item: dict[str, object] = {
        "name": sample.name,
        "value": sample.value,
        "timestamp": format_ms(sample.timestamp_ms),
    }
    if sample.labels:
        item["labels"] = dict(sample.labels)
    return item


def seed_json(device_id: str, samples: Sequence[Sample], sent_at_ms: int) -> bytes:
    payload = {
        "device_id": device_id,
        "timestamp": format_ms(sent_at_ms),
        "metrics": [seed_metric(s) for s in samples if is_finite(s.value)],
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
