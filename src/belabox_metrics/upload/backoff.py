"""Retry timing, as pure functions (tested in microseconds, not minutes)."""

from __future__ import annotations

import random

from belabox_metrics.timefmt import parse_http_date


def backoff_delay(attempt: int, *, base: float, maximum: float, jitter: float,
                  rng: random.Random) -> float:
    """Exponential backoff for retry number ``attempt`` (1 = first retry): base * 2^(n-1),
    capped at ``maximum``, then spread by ±``jitter`` (0.2 = ±20 %) so a fleet that lost
    its uplink together does not retry together."""
    raw = min(maximum, base * float(2 ** max(0, attempt - 1)))
    return max(0.0, raw * (1.0 + rng.uniform(-jitter, jitter)))


def parse_retry_after(value: str | None, now_wall: float, *, limit: float = 3600.0) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date.

    Returns None when absent or unreadable; never negative; capped at ``limit`` so a
    misconfigured proxy cannot park the uploader for a day."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return min(float(text), limit)
    when = parse_http_date(text)
    if when is None:
        return None
    return min(max(0.0, when - now_wall), limit)
