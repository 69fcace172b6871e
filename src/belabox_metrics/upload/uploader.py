"""The upload loop: claim pending rows, validate, encode, post, acknowledge.

At-least-once by construction and exactly-once with a deduplicating destination:
- rows are acknowledged (marks move) only after a 2xx, and only over what the answer says
  was accepted; the acknowledgement is one SQLite transaction;
- anything a destination would silently drop or forever refuse (non-finite values,
  timestamps outside its window, a sample a 400 isolates as poison) is moved to the
  dead-letter table with the reason and counted: never sent to vanish, never blocking;
- 429, 5xx, timeouts and resets are retried with exponential backoff and jitter, honouring
  Retry-After; when the attempts of a cycle run out the rows simply stay pending: data is
  never dropped because a retry budget ran out;
- requests are sized in compressed bytes: each claim takes as many rows as the compressed
  bytes per sample seen so far say fit in the request limit (``remote.max_request_bytes``,
  and while a stream is live the bandwidth budget's bucket), at most ``max_samples``; a
  chunk that still compresses larger is split in half until it fits.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from belabox_metrics.clock import Clock
from belabox_metrics.logs import RepeatLimiter, event, foreign_text, mask_secrets, redact_url
from belabox_metrics.model import Sample
from belabox_metrics.sdnotify import Heartbeat
from belabox_metrics.selfmetrics import Family, Histogram
from belabox_metrics.store.queue import LANES, Row, SampleQueue
from belabox_metrics.store.series import RawRow
from belabox_metrics.upload.backoff import backoff_delay, parse_retry_after
from belabox_metrics.upload.bandwidth import TokenBucket
from belabox_metrics.upload.encode import WireFormat
from belabox_metrics.upload.transport import Response, Transport, TransportError

DAY_MS = 86_400_000
# Permanent refusals of the request's content: isolate the poison sample(s) by bisection.
POISON_STATUSES = frozenset({400, 422})
# Retryable: the server or a proxy is overloaded or briefly away.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_NEVER = threading.Event()
# vmauth before 1.80 (Debian's 1.79) answers an unknown bearer token, and a path its url_map
# does not route, with 400. Those refuse the request, not the samples: keep them queued.
REQUEST_REFUSALS = (b"cannot find the provided auth token", b"missing route for")
# How VictoriaMetrics words an error (lib/httpserver: `remoteAddr: %q; requestURI: %s; %s`).
VM_ERROR_PREFIX = b'remoteAddr: "'
VM_REMOTE_ADDR = re.compile(rb'^remoteAddr: "[^"]*"; ')
# metrics-receiver names the refused item of a batch: "metrics[3].value: must be ...".
RECEIVER_NAMED = re.compile(r"metrics\[(\d+)\]")


@dataclass(frozen=True)
class UploadPolicy:
    max_samples: int = 10_000          # per request, at most (requests are sized by max_bytes)
    max_bytes: int = 256 * 1024        # per request, compressed
    max_attempts: int = 5              # per chunk per cycle
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    jitter: float = 0.2
    max_age_ms: int = 30 * DAY_MS      # the destination drops older samples (retention)
    max_future_ms: int = DAY_MS        # ... and samples too far ahead (VM: 2 days)
    # True: after an outage each lane's newest chunk goes first (the remote view is current at
    # once) and its backlog after it, out of time order per series. VictoriaMetrics accepts
    # that; receivers that need each series in order (Prometheus-style) do not.
    newest_first: bool = False
    max_batches_per_cycle: int = 1000
    # Requests a cycle may spend bisecting one refused batch (0: 2*log2(batch)+2, enough to
    # isolate one bad sample); bytes at 4x the refused request's size plus 1 KiB a request.
    bisect_max_requests: int = 0


class RequestSizer:
    """How many rows to claim for one request: as many as should compress to within the
    request's byte limit, by the compressed bytes per sample of the bodies built so far, and
    at most ``max_samples``. A count says nothing about bytes (a box with 7,300 series made
    27 requests of 500 a cycle, each paying a claim and an acknowledgement); bytes are what
    the uplink, the live budget and the server's limit care about.

    The estimate rises at once when a body compresses worse than it says and falls halfway
    towards a better one, and is aimed at ``FILL`` of the limit: a claim seldom compresses
    over it (and if it does, the uploader splits it, which costs one more encoding). Bodies
    of fewer than ``MIN_OBSERVED`` samples are not counted unless over the limit: their
    fixed part (gzip framing, series names) says little about a large request."""

    INITIAL = 32.0      # compressed bytes per sample before any body was built (vm-jsonl: ~6-9)
    FILL = 0.75
    MIN_OBSERVED = 100

    def __init__(self) -> None:
        self.bytes_per_sample = self.INITIAL

    def limit(self, max_bytes: float, max_samples: int) -> int:
        """Rows to claim for a request of at most ``max_bytes`` compressed bytes."""
        return max(1, min(max_samples, int(max_bytes * self.FILL / self.bytes_per_sample)))

    def observe(self, body_bytes: int, samples: int, max_bytes: float) -> None:
        """A body of ``samples`` samples compressed to ``body_bytes``."""
        if samples <= 0 or (samples < self.MIN_OBSERVED and body_bytes <= max_bytes):
            return
        seen = body_bytes / samples
        self.bytes_per_sample = seen if seen > self.bytes_per_sample else (self.bytes_per_sample + seen) / 2


@dataclass
class CycleResult:
    batches: int = 0
    acknowledged: int = 0
    dead: int = 0
    error: str | None = None


@dataclass
class _Delivery:
    resolved: int = 0                              # prefix of the rows accepted or dead-lettered
    dead: list[tuple[Row, str]] = field(default_factory=list)
    accepted: int = 0
    error: str | None = None


class UploadError(Exception):
    pass


def new_batch_id() -> str:
    """A random (version 4) UUID, without importing uuid (1.5 MB of RSS)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def accepted_count(response: Response, sent: int) -> int:
    """How many of ``sent`` samples a 2xx answer accepted.

    metrics-receiver answers {"received": N}; an answer without a count (VictoriaMetrics'
    204) accepts the whole request."""
    try:
        body = json.loads(response.body) if response.body else None
    except ValueError:
        return sent
    received = body.get("received") if isinstance(body, dict) else None
    if isinstance(received, int) and not isinstance(received, bool):
        return max(0, min(sent, received))
    return sent


def check_sample(sample: Sample, now_ms: int, policy: UploadPolicy) -> str | None:
    """Why the destination would drop or refuse this sample, or None if it is fine."""
    value = sample.value
    if value is None:
        return None  # text: kept locally, never sent, not an error
    if not math.isfinite(value):
        return f"value {value} is not a finite number"
    if sample.timestamp_ms < now_ms - policy.max_age_ms:
        return f"timestamp {sample.timestamp_ms} is older than the destination's retention"
    if sample.timestamp_ms > now_ms + policy.max_future_ms:
        return f"timestamp {sample.timestamp_ms} is in the future (clock not synchronised?)"
    return None


_ACCEPTED = object()  # a row's outcome: the destination accepted it


@dataclass(frozen=True)
class _Refused:
    """A row's outcome: refused on its own (a request carrying only it, or named)."""

    seq: int                 # when (the request's sequence number in this bisection)
    reason: str
    named: bool = False      # the destination's error names this sample


@dataclass
class _Stop:
    error: str | None
    budget: bool = False  # the bisection budget ran out (not an answer of the destination)


@dataclass
class _Probe(_Stop):
    known: tuple[int, Response] = (0, Response(0))


class _Bisection:
    """One claim's delivery: each row's outcome, when siblings were accepted, the budget."""

    def __init__(self, rows: Sequence[RawRow], max_requests: int) -> None:
        self.rows = rows
        self.outcome: list[object] = [None] * len(rows)
        self.accept_seqs: list[int] = []
        self.max_requests = max_requests
        self.budget_bytes = 0  # set from the first refused request's size
        self.deep = False
        self.settled = False  # _settle spent its three requests
        self.requests = 0
        self.bytes = 0
        self.accepted = 0
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def accept(self, lo: int, hi: int, seq: int) -> None:
        for index in range(lo, hi):
            self.outcome[index] = _ACCEPTED
        self.accepted += hi - lo
        self.accept_seqs.append(seq)

    def proven(self, refused: _Refused) -> bool:
        """The request just before this sample's refusal and the one just after were
        accepted: the destination refused it while accepting its siblings."""
        return refused.seq - 1 in self.accept_seqs and refused.seq + 1 in self.accept_seqs

    def exhausted(self) -> bool:
        return self.requests >= self.max_requests or (0 < self.budget_bytes <= self.bytes)


def refusal_text(response: Response) -> bytes:
    """A refusal's words without what differs per connection (VictoriaMetrics' remoteAddr)."""
    return VM_REMOTE_ADDR.sub(b"", response.body.strip(), count=1)


def refusal_kind(response: Response, fmt_name: str) -> tuple[str, int | None]:
    """What a refusal (4xx) is about: ("content", index or None) when it may be the
    samples' fault (VictoriaMetrics' error format, metrics-receiver's JSON error about a
    metric, 413), else ("destination", None): an HTML page, a proxy's or a load balancer's
    answer, anything that is not the destination judging the samples."""
    body = response.body.lstrip()
    if response.status == 413:
        return "content", None
    if body.startswith(VM_ERROR_PREFIX) and b"requestURI: " in body[:4096]:
        # VictoriaMetrics (and vmagent/vmauth passing its answer on): `remoteAddr: "ip:port";
        # requestURI: /api/v1/import; <why>`. It names no sample: only bisection can tell
        # whether one is at fault (e.g. "too long line") or the whole request is.
        return "content", None
    if fmt_name == "json" and body.startswith(b"{"):
        try:
            answer = json.loads(body)
        except ValueError:
            return "destination", None
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, str):
            # metrics-receiver: {"success": false, "error": "metrics[3].value: must be ..."}
            found = RECEIVER_NAMED.match(error)
            if found:
                return "content", int(found.group(1))
    return "destination", None


def redirect_error(url: str, response: Response) -> str:
    """A 3xx to an upload: not followed (a POST is not re-sent elsewhere). Names where the
    destination points and the fix."""
    from urllib.parse import urljoin

    location = response.header("Location")
    if not location:
        return (f"HTTP {response.status} redirect without a Location; uploads are not re-sent elsewhere, "
                "samples stay queued: check remote.url")
    target = foreign_text(urljoin(url, location.strip()), 300)
    return (f"HTTP {response.status} redirect to {target}; uploads are not re-sent elsewhere, samples stay "
            f"queued: set remote.url to {target}")


class Uploader:
    def __init__(self, queue: SampleQueue, transport: Transport, *, url: str, fmt: WireFormat,
                 clock: Clock, log: logging.Logger, policy: UploadPolicy | None = None,
                 headers: dict[str, str] | None = None, stop: threading.Event | None = None,
                 rng: random.Random | None = None, heartbeat: Heartbeat | None = None,
                 timeout: float = 10.0, budget: TokenBucket | None = None,
                 lanes: Callable[[], Sequence[int]] | None = None) -> None:
        self.queue = queue
        self.transport = transport
        self.url = url
        self.destination = redact_url(url)
        self.fmt = fmt
        self.clock = clock
        self.log = log
        self.policy = policy or UploadPolicy()
        self.extra_headers = headers or {}
        self.stop = stop or threading.Event()
        self.rng = rng or random.Random()
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.budget = budget
        # The priority lanes to serve now, most important first (fewer while a stream is live).
        self.lanes = lanes or (lambda: LANES)
        self.sizer = RequestSizer()
        self.duration = Histogram()
        # Counters for health and self-metrics.
        self.uploaded_total = 0
        self.failures_total = 0
        self.partial_total = 0
        self.dead_total = 0
        self.requests_total = 0
        self.bytes_sent_total = 0
        # Rows that left the backlog (acknowledged or dead-lettered): keeps health's pending
        # figure current while a cycle runs (runtime/backlog.py).
        self.resolved_total = 0
        # Monotonic start of the request on the wire now, None between requests.
        self.in_flight_since: float | None = None
        self.last_success_wall: float | None = None
        self.last_error: str | None = None
        self.last_status: int | None = None
        # A destination refusing uploads as such (not a sample): why, how often in a row, and
        # when to try again (monotonic). Health reports ``refusing`` while it lasts.
        self.refusing: str | None = None
        self.refused_total = 0          # in a row (reset by a 2xx): sets the backoff
        self.refusals_total = 0         # ever: a self-metric
        self.bisect_requests_total = 0  # requests spent isolating refused samples
        self.hold_until: float | None = None
        self._look_deeper = False
        # Identical warnings (a destination refusing every request) once, then a count a minute.
        self.warnings = RepeatLimiter(clock.monotonic)

    # -- the cycle -------------------------------------------------------------------
    def run_cycle(self, deadline: float | None = None) -> CycleResult:
        """Send pending rows until none are left, a chunk fails for now, or ``deadline``
        (monotonic) passes."""
        result = CycleResult()
        if deadline is None and self.hold_until is not None and self.clock.monotonic() < self.hold_until:
            # Backing off from a destination that refused the last request as such.
            result.error = self.last_error
            return result
        self.hold_until = None
        while result.batches < self.policy.max_batches_per_cycle and not self._past(deadline):
            limit = self.sizer.limit(self.request_limit(), self.policy.max_samples)
            claims = self.queue.next_claims(self.destination, limit,
                                            newest_first=self.policy.newest_first, lanes=self.lanes())
            if not claims:
                break
            result.batches += 1
            rows = claims[0].raw if len(claims) == 1 else [row for claim in claims for row in claim.raw]
            delivery = self._deliver_claim(rows, deadline)
            if delivery.resolved:
                self.queue.ack_claims(self.destination, claims, delivery.resolved, delivery.dead)
                self.resolved_total += delivery.resolved
            result.acknowledged += delivery.resolved
            result.dead += len(delivery.dead)
            self.dead_total += len(delivery.dead)
            for row, reason in delivery.dead:
                self.warnings.log(self.log, logging.WARNING, f"dead letter:{reason[:120]}",
                                  "sample moved to dead letters", metric=row.sample.name,
                                  timestamp_ms=row.ts, reason=reason)
            if delivery.error is not None:
                result.error = delivery.error
                break
            if delivery.resolved == 0:
                result.error = "no progress"
                break
            if (delivery.resolved == len(rows) < limit
                    and all(claim.region != "fresh" for claim in claims)):
                # Room was left: every lane served gave all it had (a fresh claim may still
                # have a backlog behind it). Saves a round of queries finding nothing.
                break
        return result

    def request_limit(self) -> float:
        """The largest compressed body one request may have now: ``max_bytes``, and while a
        stream is live also the bandwidth budget's bucket."""
        if self.budget is None:
            return float(self.policy.max_bytes)
        return min(float(self.policy.max_bytes), self.budget.max_request_bytes())

    def _past(self, deadline: float | None) -> bool:
        return (self.stop.is_set() and deadline is None) or (
            deadline is not None and self.clock.monotonic() >= deadline)

    def _deliver_claim(self, rows: Sequence[RawRow], deadline: float | None) -> _Delivery:
        """Validate the claimed rows (as stored: ts, series id, value) and deliver those the
        destination may see."""
        now_ms = int(self.clock.wall() * 1000)
        # Rows the destination must never see are resolved up front, as dead letters (or,
        # for text, as kept-locally), and acknowledged with the chunk around them.
        dead: dict[int, str] = {}
        odd: list[int] = []
        oldest, newest = now_ms - self.policy.max_age_ms, now_ms + self.policy.max_future_ms
        for index, (ts, _, value) in enumerate(rows):
            # The common case inline (a claim is thousands of rows): a float (a numeric
            # series' value; text is a str, NaN is stored as NULL), finite (x - x is NaN for
            # inf) and inside the window.
            if value.__class__ is not float or value - value != 0.0 or not oldest <= ts <= newest:
                odd.append(index)
        send = rows
        send_index: Sequence[int] = range(len(rows))
        if odd:
            # The others as Samples (check_sample says why): text stays local, the rest is
            # dead or (an integer stored as such) sent as the float it decodes to.
            send_index, send, at = [], [], 0
            for index in [*odd, len(rows)]:
                send_index.extend(range(at, index))
                send.extend(rows[at:index])
                at = index + 1
                if index == len(rows):
                    break
                row = self._row(rows[index])
                problem = check_sample(row.sample, now_ms, self.policy)
                if problem is not None:
                    dead[index] = problem
                elif row.sample.value is not None:
                    send_index.append(index)
                    send.append((row.ts, row.series_id, row.sample.value))
        delivery = self._deliver(send, deadline)
        # Map the resolved prefix of the sent rows back onto the claim's rows.
        if delivery.resolved == len(send_index):
            resolved = len(rows)
        elif delivery.resolved == 0:
            resolved = send_index[0] if send_index else len(rows)
        else:
            resolved = send_index[delivery.resolved - 1] + 1
        skipped = [(self._row(rows[i]), reason) for i, reason in dead.items() if i < resolved]
        return _Delivery(resolved, skipped + delivery.dead, delivery.accepted, delivery.error)

    def _row(self, raw: RawRow) -> Row:
        return self.queue.catalogue.row(*raw)

    def _deliver(self, rows: Sequence[RawRow], deadline: float | None) -> _Delivery:
        """Deliver ``rows`` in order. A request too large is split; one refused as bad
        content is bisected, within a budget, to find the sample the destination refuses.

        A sample becomes a dead letter only on the destination's own word about it: the
        error names it (metrics-receiver's ``metrics[i]: ...``), or it was refused alone
        between two back-to-back acceptances of a sibling (accepted, refused, accepted, in
        consecutive requests). A destination that refuses everything for a while (a proxy
        restarting, a misrouted vmauth) cannot produce that unless its whole window fits in
        one round trip around that one request, so valid samples stay queued."""
        if not rows:
            return _Delivery()
        run = _Bisection(rows, self.policy.bisect_max_requests or 2 * math.ceil(math.log2(max(2, len(rows)))) + 2)
        # After a cycle stopped on "both halves refused alike", the next one looks deeper:
        # bad samples in both halves (one series the destination refuses) look the same at
        # first, and only a search finding accepted parts tells them from a refusing proxy.
        run.deep, self._look_deeper = self._look_deeper, False
        stop = self._range(run, 0, len(rows), 0, deadline)
        resolved, dead, error = 0, [], stop.error if stop is not None else None
        for index, outcome in enumerate(run.outcome):
            if outcome is _ACCEPTED:
                resolved = index + 1
                continue
            if isinstance(outcome, _Refused):
                if not outcome.named and not run.proven(outcome) and (stop is None or stop.budget):
                    stop = None
                    outcome = self._settle(run, index, outcome, deadline)
                    if outcome is _ACCEPTED:
                        resolved = index + 1
                        continue
                if isinstance(outcome, _Refused) and (outcome.named or run.proven(outcome)):
                    dead.append((self._row(rows[index]), outcome.reason))
                    resolved = index + 1
                    continue
                if error is None:
                    assert isinstance(outcome, _Refused)
                    if not run.accept_seqs:
                        error = self._refused_by_destination(outcome.reason + " (nothing accepted)")
                    else:
                        error = (f"destination refused a sample without naming it or accepting its "
                                 f"neighbours ({outcome.reason}); samples stay queued")
            break
        if error is not None and resolved < len(rows):
            self.last_error = error
        return _Delivery(resolved, dead, run.accepted, error)

    def _settle(self, run: _Bisection, index: int, refused: _Refused, deadline: float | None) -> object:
        """Prove or clear a suspect with three consecutive requests: an accepted neighbour
        again (a duplicate the deduplicating destination drops), the suspect, the neighbour
        once more. Accepted-refused-accepted, back to back, is the destination refusing that
        sample while it accepts its sibling: a blanket refusal would have to begin and end
        within one round trip, around exactly that request. The suspect accepted: it was
        the destination's refusal, not the sample's. At most three requests beyond the
        budget, once a cycle."""
        neighbour = next((i for i in range(index - 1, -1, -1) if run.outcome[i] is _ACCEPTED),
                         next((i for i in range(index + 1, len(run.outcome)) if run.outcome[i] is _ACCEPTED), None))
        if run.settled or neighbour is None:
            return refused
        run.settled = True
        run.max_requests = max(run.max_requests, run.requests) + 3
        for step in (neighbour, index, neighbour):
            if self._range(run, step, step + 1, 1, deadline) is not None:
                return refused  # no answer, or the destination refusing as such: stop here
        outcome = run.outcome[index]
        if outcome is _ACCEPTED:
            return outcome
        return outcome if isinstance(outcome, _Refused) and run.proven(outcome) else refused

    def _range(self, run: _Bisection, lo: int, hi: int, depth: int, deadline: float | None,
               known: tuple[int, Response] | None = None, probe: bool = False) -> _Stop | None:
        """Send rows[lo:hi] (or use the ``known`` refusal of exactly that range) and, when the
        destination refuses the content, bisect it. Records each row's outcome in ``run``.
        Returns a _Stop when this cycle must not go on (rows stay queued); with ``probe``, a
        refusal of the content is returned as a _Probe instead of being bisected."""
        rows = run.rows[lo:hi]
        if known is None:
            body = self.fmt.body_rows(rows, self.queue.catalogue, int(self.clock.wall() * 1000))
            # Requests while a stream is live must also fit the bandwidth budget's bucket.
            limit = self.request_limit()
            if depth == 0:
                self.sizer.observe(len(body), len(rows), limit)
            if len(body) > limit and len(rows) > 1 and not probe:
                middle = lo + len(rows) // 2  # a size split: not a refusal, no budget spent
                return self._range(run, lo, middle, depth, deadline) or self._range(run, middle, hi, depth, deadline)
            if depth > 0:
                if run.exhausted():
                    return _Stop(budget=True, error=f"bisection budget spent ({run.requests} requests, {run.bytes} bytes this "
                                 "cycle); the rest stays queued for the next cycle")
                run.requests += 1
                run.bytes += len(body)
                self.bisect_requests_total += 1
            response, error = self._post(body, len(rows), deadline)
            if response is None:
                return _Stop(error)
            seq = run.next_seq()
            if 200 <= response.status < 300:
                accepted = accepted_count(response, len(rows))
                if accepted < len(rows):
                    self.partial_total += 1
                if accepted == 0:
                    return _Stop(f"destination accepted 0 of {len(rows)} samples")
                run.accept(lo, lo + accepted, seq)
                return _Stop(None) if accepted < len(rows) else None
            if depth == 0:
                # Each request repeats what does not halve (gzip framing, series names): 1 KiB each.
                run.budget_bytes = 4 * len(body) + 1024 * run.max_requests
            known = (seq, response)
        seq, response = known
        kind, named = refusal_kind(response, self.fmt.name)
        reason = f"HTTP {response.status}: {foreign_text(response.body)}"
        if kind == "destination":
            return _Stop(self._refused_by_destination(reason))
        if probe:
            return _Probe(None, known=known)
        if named is not None and named < len(rows):
            run.outcome[lo + named] = _Refused(seq, reason, named=True)
            return (self._range(run, lo, lo + named, depth + 1, deadline)
                    or self._range(run, lo + named + 1, hi, depth + 1, deadline))
        if len(rows) == 1:
            run.outcome[lo] = _Refused(seq, reason)
            return None
        middle = lo + len(rows) // 2
        if depth == 0 and not run.accept_seqs and not run.deep and response.status != 413:
            # Both halves refused alike before anything was accepted: the destination
            # refuses everything, not one sample. Stop at once instead of bisecting.
            stop = self._range(run, lo, middle, depth + 1, deadline, probe=True)
            if isinstance(stop, _Probe):
                left = stop.known
                right_stop = self._range(run, middle, hi, depth + 1, deadline, probe=True)
                if isinstance(right_stop, _Probe):
                    if refusal_text(right_stop.known[1]) == refusal_text(left[1]):
                        self._look_deeper = True
                        return _Stop(self._refused_by_destination(reason + " (both halves refused alike)"))
                    return (self._range(run, lo, middle, depth + 1, deadline, known=left)
                            or self._range(run, middle, hi, depth + 1, deadline, known=right_stop.known))
                if right_stop is not None:
                    return right_stop
                return self._range(run, lo, middle, depth + 1, deadline, known=left)
            if stop is not None:
                return stop
            return self._range(run, middle, hi, depth + 1, deadline)
        return (self._range(run, lo, middle, depth + 1, deadline)
                or self._range(run, middle, hi, depth + 1, deadline))

    def _refused_by_destination(self, reason: str) -> str:
        reason = mask_secrets(reason)  # VictoriaMetrics echoes the request URI, query included
        self.refused_total += 1
        self.refusals_total += 1
        self.refusing = reason
        self.hold_until = self.clock.monotonic() + backoff_delay(
            min(self.refused_total, 16), base=self.policy.backoff_base, maximum=self.policy.backoff_max,
            jitter=self.policy.jitter, rng=self.rng)
        self.last_error = (f"destination refuses uploads, not a sample ({reason}); samples stay queued: "
                           "check remote.url, any proxy in front of it and the token")
        return self.last_error

    def _post(self, body: bytes, count: int, deadline: float | None) -> tuple[Response | None, str | None]:
        """POST with retries. Returns (response, None) for any final HTTP answer (2xx or a
        non-retryable status), or (None, error) when this cycle should give up for now."""
        batch_id = new_batch_id()
        headers = {"Content-Type": self.fmt.content_type, "Content-Encoding": self.fmt.content_encoding,
                   **self.fmt.headers, "X-Batch-Id": batch_id, "User-Agent": "belabox-metrics",
                   **self.extra_headers}
        attempt = 0
        while True:
            attempt += 1
            if self.budget is not None and not self._wait_for_budget(len(body), deadline):
                return None, "bandwidth budget: stopping for now"
            started = time.perf_counter()
            fields: dict[str, object] = {"batch_id": batch_id, "attempt": attempt, "count": count,
                                         "bytes_sent": len(body), "url": self.destination}
            retry_after: float | None = None
            self.requests_total += 1
            self.bytes_sent_total += len(body)
            if self.budget is not None:
                self.budget.charge(len(body))
            if self.heartbeat is not None:
                # A connect plus a response read may each take the full timeout.
                self.heartbeat.beat(2 * self.timeout + 10)
            try:
                response = self._send(body, headers)
            except TransportError as exc:
                error, error_type = f"no answer: {foreign_text(str(exc), 500)}", "transport"
            else:
                self.last_status = response.status
                self.duration.observe(time.perf_counter() - started)
                fields.update(http_status=response.status, bytes_rcvd=len(response.body),
                              duration_ms=round((time.perf_counter() - started) * 1000, 1))
                if 200 <= response.status < 300:
                    self.uploaded_total += accepted_count(response, count)
                    self.last_success_wall = self.clock.wall()
                    self.last_error = None
                    self.refusing = None
                    self.refused_total = 0
                    event(self.log, logging.INFO, "uploaded", **fields)
                    return response, None
                detail = foreign_text(response.body)
                error, error_type = f"HTTP {response.status}: {detail}", "http"
                if 300 <= response.status < 400:
                    # Never re-sent elsewhere silently: the operator moves remote.url.
                    error, error_type = redirect_error(self.url, response), "redirect"
                    self._failed(error, error_type, fields)
                    self._refused_by_destination(error)
                    self.last_error = error
                    return None, error
                if response.status not in RETRY_STATUSES:
                    self._failed(error, error_type, fields)
                    if ((response.status in POISON_STATUSES or response.status == 413)
                            and not response.body.lstrip().startswith(REQUEST_REFUSALS)):
                        return response, error  # maybe about the samples: the caller judges
                    # 401/403, a vmauth refusal, 404, 405, ...: the destination refuses the
                    # request itself. Keep the data, back off, and say so in /health.
                    self._refused_by_destination(error)
                    if response.status in (401, 403, 400):
                        self.last_error = error
                        return None, f"authentication refused ({error}); samples stay queued"
                    self.last_error = error
                    return None, error
                retry_after = parse_retry_after(response.header("Retry-After"), self.clock.wall())
            self._failed(error, error_type, fields)
            if attempt >= self.policy.max_attempts:
                return None, f"{error} (gave up after {attempt} attempts this cycle; samples stay queued)"
            delay = retry_after if retry_after is not None else backoff_delay(
                attempt, base=self.policy.backoff_base, maximum=self.policy.backoff_max,
                jitter=self.policy.jitter, rng=self.rng)
            if deadline is not None and self.clock.monotonic() + delay > deadline:
                return None, error
            event(self.log, logging.INFO, "retrying upload", batch_id=batch_id, attempt=attempt,
                  backoff_ms=round(delay * 1000), retry_after=retry_after is not None)
            if self.heartbeat is not None:
                self.heartbeat.beat(delay + 10)
            # During the shutdown flush (deadline set) stop is already set: sleep anyway.
            if self.clock.wait(delay, self.stop if deadline is None else _NEVER) and deadline is None:
                return None, error

    def _send(self, body: bytes, headers: Mapping[str, str]) -> Response:
        self.in_flight_since = self.clock.monotonic()
        try:
            return self.transport.post(self.url, body, headers)
        finally:
            self.in_flight_since = None

    def families(self) -> list[Family]:
        return [
            Family("uploader.metrics_uploaded_total", "counter", "Samples acknowledged by the destination.",
                   [((), float(self.uploaded_total))]),
            Family("uploader.upload_failures_total", "counter", "Upload attempts that failed.",
                   [((), float(self.failures_total))]),
            Family("uploader.partial_success_total", "counter", "Answers that accepted only part of a request.",
                   [((), float(self.partial_total))]),
            Family("uploader.dead_letters_total", "counter", "Samples moved to the dead-letter table.",
                   [((), float(self.dead_total))]),
            Family("uploader.bytes_sent_total", "counter", "Compressed request bytes sent.",
                   [((), float(self.bytes_sent_total))]),
            Family("uploader.destination_refusals_total", "counter",
                   "Requests the destination refused as such (not about samples); data kept queued.",
                   [((), float(self.refusals_total))]),
            Family("uploader.bisect_requests_total", "counter",
                   "Requests spent isolating a sample the destination refused (bounded per cycle).",
                   [((), float(self.bisect_requests_total))]),
            Family("uploader.upload_duration_seconds", "histogram", "Time one upload request took.",
                   histograms=[((), self.duration)]),
        ]

    def in_flight_seconds(self) -> float | None:
        """How long the request on the wire now has been waiting, None between requests."""
        since = self.in_flight_since
        return None if since is None else max(0.0, self.clock.monotonic() - since)

    def _wait_for_budget(self, size: int, deadline: float | None) -> bool:
        """Wait until the bandwidth budget lets ``size`` bytes go. False when stopping or
        when the wait would pass the deadline (the rows simply stay pending)."""
        assert self.budget is not None
        while True:
            delay = self.budget.delay_for(size)
            if delay <= 0:
                return True
            if deadline is not None and self.clock.monotonic() + delay > deadline:
                return False
            if self.heartbeat is not None:
                self.heartbeat.beat(min(delay, 5.0) + 10)
            self.budget.waited_seconds += min(delay, 5.0)
            # Wake at least every 5 s: the stream may have stopped and the rate risen. During
            # the shutdown flush (deadline set) stop is already set: sleep anyway.
            if self.clock.wait(min(delay, 5.0), self.stop if deadline is None else _NEVER) and deadline is None:
                return False

    def _failed(self, error: str, error_type: str, fields: dict[str, object]) -> None:
        self.failures_total += 1
        self.last_error = error
        self.warnings.log(self.log, logging.WARNING, f"upload failed:{error[:200]}",
                          "upload failed; samples stay queued", error=error, error_type=error_type, **fields)
