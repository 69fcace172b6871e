"""The upload loop: read pending samples from the queue, encode, post, acknowledge.

At-least-once by construction: the cursor moves only after the destination answered 2xx,
and only over the samples it said it accepted. A failure leaves everything pending for the
next cycle; nothing is dropped because an attempt failed. Duplicates after a lost answer
are removed by the destination (it deduplicates by sample key).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass

from belabox_metrics.clock import Clock
from belabox_metrics.logs import event, redact_url
from belabox_metrics.model import is_finite
from belabox_metrics.store.queue import SampleQueue, StoredSample
from belabox_metrics.upload.encode import SEED_JSON_CONTENT_TYPE, seed_json
from belabox_metrics.upload.transport import Response, Transport, TransportError


@dataclass
class CycleResult:
    batches: int = 0
    acknowledged: int = 0
    error: str | None = None


def accepted_count(response: Response, sent: int) -> int:
    """How many of ``sent`` samples a 2xx answer accepted.

    metrics-receiver answers {"received": N}; an answer without a count (VictoriaMetrics'
    204) accepts the whole request.
    """
    try:
        body = json.loads(response.body) if response.body else None
    except ValueError:
        return sent
    received = body.get("received") if isinstance(body, dict) else None
    if isinstance(received, int) and not isinstance(received, bool):
        return max(0, min(sent, received))
    return sent


def ack_position(batch: list[StoredSample], sent_ids: list[int], accepted: int) -> int | None:
    """The row id up to which the batch is acknowledged, given ``accepted`` of the rows that
    were sent (in order). Rows that were never sendable (text, non-finite) before the last
    accepted one are acknowledged with it."""
    if accepted >= len(sent_ids):
        return batch[-1].id if batch else None
    if accepted == 0:
        return None
    return sent_ids[accepted - 1]


class Uploader:
    def __init__(self, queue: SampleQueue, transport: Transport, *, url: str, device_id: str,
                 batch_size: int, clock: Clock, log: logging.Logger,
                 max_batches_per_cycle: int = 1000) -> None:
        self.queue = queue
        self.transport = transport
        self.url = url
        self.destination = redact_url(url)
        self.device_id = device_id
        self.batch_size = batch_size
        self.clock = clock
        self.log = log
        self.max_batches_per_cycle = max_batches_per_cycle
        # Counters for health and self-metrics.
        self.uploaded_total = 0
        self.failures_total = 0
        self.partial_total = 0
        self.last_success_wall: float | None = None
        self.last_error: str | None = None

    def run_cycle(self, deadline: float | None = None) -> CycleResult:
        """Send pending batches until none are left, one fails, or ``deadline`` (monotonic)
        passes."""
        result = CycleResult()
        while result.batches < self.max_batches_per_cycle:
            if deadline is not None and self.clock.monotonic() >= deadline:
                break
            batch = self.queue.pending(self.destination, self.batch_size)
            if not batch:
                break
            result.batches += 1
            acknowledged, error = self._send(batch)
            result.acknowledged += acknowledged
            if error is not None:
                result.error = error
                break
        return result

    def _send(self, batch: list[StoredSample]) -> tuple[int, str | None]:
        sendable = [row for row in batch if is_finite(row.sample.value)]
        sent_ids = [row.id for row in sendable]
        batch_id = str(uuid.uuid4())
        body = seed_json(self.device_id, [row.sample for row in sendable], int(self.clock.wall() * 1000))
        headers = {"Content-Type": SEED_JSON_CONTENT_TYPE, "X-Batch-Id": batch_id,
                   "User-Agent": "belabox-metrics"}
        started = time.perf_counter()
        fields = {"batch_id": batch_id, "count": len(sendable), "bytes_sent": len(body),
                  "url": self.destination}
        try:
            response = self.transport.post(self.url, body, headers)
        except TransportError as exc:
            return 0, self._failed(f"no answer: {exc}", fields, started, error_type="transport")
        fields["http_status"] = response.status
        fields["bytes_rcvd"] = len(response.body)
        if not 200 <= response.status < 300:
            detail = response.body[:200].decode("utf-8", "replace")
            return 0, self._failed(f"HTTP {response.status}: {detail}", fields, started,
                                   error_type="http")
        accepted = accepted_count(response, len(sendable))
        position = ack_position(batch, sent_ids, accepted)
        if position is None:
            return 0, self._failed(f"remote accepted 0 of {len(sendable)} samples", fields, started,
                                   error_type="rejected")
        self.queue.ack(self.destination, position)
        acknowledged = sum(1 for row in batch if row.id <= position)
        if accepted < len(sendable):
            self.partial_total += 1
        self.uploaded_total += accepted
        self.last_success_wall = self.clock.wall()
        self.last_error = None
        event(self.log, logging.INFO, "uploaded batch", accepted=accepted,
              duration_ms=round((time.perf_counter() - started) * 1000, 1), **fields)
        return acknowledged, None

    def _failed(self, error: str, fields: dict[str, object], started: float, *,
                error_type: str) -> str:
        self.failures_total += 1
        self.last_error = error
        event(self.log, logging.WARNING, "upload failed; samples stay queued for the next cycle",
              error=error, error_type=error_type,
              duration_ms=round((time.perf_counter() - started) * 1000, 1), **fields)
        return error
