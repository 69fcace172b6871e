"""RFC 3339 timestamps with millisecond precision, the seed payload's time format."""

from __future__ import annotations

import re
from datetime import datetime, timezone

_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|z|[+-]\d{2}:\d{2})$"
)


def format_ms(timestamp_ms: int) -> str:
    """1760193000123 -> '2025-10-11T14:30:00.123Z' (UTC, always 3 decimals)."""
    seconds, millis = divmod(int(timestamp_ms), 1000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def parse_ms(text: str) -> int:
    """Parse an RFC 3339 timestamp to integer milliseconds since the epoch (UTC).

    Raises ValueError with a readable message for anything else; sub-millisecond digits
    are truncated.
    """
    match = _RFC3339_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp like 2025-10-11T14:30:00.123Z")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7) or ""
    zone = match.group(8)
    if zone in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(f"{text!r} has an invalid UTC offset")
        from datetime import timedelta

        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        stamp = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date/time ({exc})") from None
    millis = int((fraction[1:] + "000")[:3]) if fraction else 0
    whole_seconds = int(stamp.timestamp())
    return whole_seconds * 1000 + millis
