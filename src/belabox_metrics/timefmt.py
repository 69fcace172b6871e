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


_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}


def parse_http_date(text: str | None) -> float | None:
    """An HTTP-date (RFC 9110: 'Sun, 06 Nov 1994 08:49:37 GMT', or the obsolete RFC 850 and
    asctime forms) -> seconds since the epoch; None if it is not one. Written out because
    email.utils costs 3.5 MB of RSS in an agent whose budget is 25 MB."""
    if not text:
        return None
    words = text.replace(",", " ").replace("-", " ").split()
    try:
        if len(words) == 6 and words[5].upper() in ("GMT", "UTC"):      # IMF-fixdate / RFC 850
            day, month, year, clock = int(words[1]), _MONTHS[words[2][:3].lower()], int(words[3]), words[4]
            if year < 100:
                year += 2000 if year < 70 else 1900
        elif len(words) == 5:                                           # asctime
            month, day, clock, year = _MONTHS[words[1][:3].lower()], int(words[2]), words[3], int(words[4])
        else:
            return None
        hour, minute, second = (int(x) for x in clock.split(":"))
        return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=timezone.utc).timestamp()
    except (KeyError, ValueError):
        return None
