"""Naming rules: how a sample's name and labels are spelt in PromQL, and how a value is
written at the precision VictoriaMetrics keeps. A leaf: the wire formats, the self-metrics
exposition, the priority classifier and verify all use it, and it imports nothing of ours.
"""

from __future__ import annotations

import re

# Seed metric names that carry no unit: their PromQL names get one.
PROMQL_NAMES = {
    "cpu.temperature": "cpu_temperature_celsius",
    "srt.packet_loss": "srt_packet_loss_percent",
}
# Spelling variants of unit suffixes -> the Prometheus base-unit suffix.
UNIT_SUFFIXES = (
    ("_pct", "_percent"), ("_percentage", "_percent"), ("_degc", "_celsius"),
    ("_degrees_celsius", "_celsius"), ("_secs", "_seconds"), ("_sec", "_seconds"),
    ("_byte", "_bytes"), ("_count_total", "_total"),
)
_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")
RESERVED_LABELS = ("__name__", "device_id")


def promql_name(name: str) -> str:
    """'cpu.usage_percent' -> 'cpu_usage_percent'; always a valid PromQL metric name."""
    if name in PROMQL_NAMES:
        return PROMQL_NAMES[name]
    out = _INVALID_NAME.sub("_", name)
    for variant, canonical in UNIT_SUFFIXES:
        if out.endswith(variant):
            out = out[: -len(variant)] + canonical
            break
    if not out or out[0].isdigit():
        out = "_" + out
    return out


def promql_label(name: str) -> str:
    out = _INVALID_LABEL.sub("_", name)
    if not out or out[0].isdigit():
        out = "_" + out
    if out in RESERVED_LABELS:
        out = "tag_" + out  # a sample label never overrides the device identity
    return out


def number(value: float) -> str:
    """Shortest text for a float at the precision VictoriaMetrics keeps (12 significant
    digits): 46.0 -> '46', 0.30000000000000004 -> '0.3', 3.5999999999999994e-05 -> '3.6e-05'.
    More digits would only cost bytes and then differ from what VM stores.

    The round trip through 12 digits is skipped when the shortest repr has at most 13
    characters: a float's repr always has a point or an exponent, so it then holds at most 12
    significant digits, and such a float rounds at 12 digits to exactly that text (the
    encoders' inline copies of this function follow it; issue 21)."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = repr(value)
    return text if len(text) <= 13 else repr(float(f"{value:.12g}"))


def exact(value: float) -> str:
    """The stored float exactly, for people reading it (`query`, `status --all`): 46 for 46.0,
    0.1 for 0.1, 0.30000000000000004 as it is (repr round-trips)."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
