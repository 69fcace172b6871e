"""metrics-receiver's memory stays bounded under concurrent maximal uploads.

The real receiver, at its defaults, gets 20 concurrent bodies of its own maximum size (valid
data: tens of thousands of small samples, gzip-compressed and not), again and again for a
bounded time. Its peak RSS (VmHWM) stays at most 200 MB, every answer is a 2xx or a 503
with Retry-After, and once the 503s are retried every upload is stored exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from belabox_metrics.receiver.app import DEFAULT_MAX_BODY_BYTES
from belabox_metrics.receiver.storage import read_samples
from tests.integration.test_receiver_http import start_receiver
from tests.receiver_load import maximal_body, peak_rss_bytes, run_load

SENDERS = 20
LOAD_SECONDS = 15.0  # new uploads begin only within this window
DEADLINE_SECONDS = 240.0  # every upload begun is stored by then
MAX_PEAK_RSS_BYTES = 200 * 1000 * 1000


def test_twenty_concurrent_maximal_bodies_stay_under_200_mb(tmp_path: Path) -> None:
    template, per_body = maximal_body(DEFAULT_MAX_BODY_BYTES, int(time.time() * 1000))
    assert len(template) == DEFAULT_MAX_BODY_BYTES
    receiver = start_receiver(tmp_path, "--log-level", "warning")
    try:
        load = run_load(
            receiver.host, receiver.port, template,
            senders=SENDERS, load_s=LOAD_SECONDS, deadline_s=DEADLINE_SECONDS,
        )
        peak = peak_rss_bytes(receiver.proc.pid)
    finally:
        code = receiver.stop()
    assert code == 0, receiver.log_text()[-2000:]

    answers = load.answers
    assert not load.problems, load.problems[:5]
    assert all(200 <= status < 300 or (status == 503 and retry) for status, retry in answers), (
        answers
    )
    stored = load.stored
    assert peak <= MAX_PEAK_RSS_BYTES, (
        f"receiver peak RSS {peak / 1e6:.0f} MB > {MAX_PEAK_RSS_BYTES / 1e6:.0f} MB "
        f"({len(stored)} uploads of {len(template)} bytes, answers {dict(answers)})"
    )

    assert len(stored) >= SENDERS
    assert all(
        answer == {"success": True, "received": per_body, "stored": per_body, "duplicates": 0}
        for answer in stored.values()
    ), stored
    rows = Counter(row[0] for row in read_samples(receiver.db))
    assert rows == {device: per_body for device in stored}
    assert any(status == 503 for status, _ in answers), f"never beyond the limit: {answers}"
