"""Graduated health, as a pure function of a snapshot of the agent (tested with an injected
clock, no threads, no HTTP).

ok        every collector healthy, uploads keep up, pending below the degraded threshold
degraded  at least one collector failing; or no successful upload for more than 2× the
          upload interval while samples are pending; or pending >= the degraded threshold;
          or a request has been in flight for more than 2× remote.timeout;
          or the clock is untrusted (samples held) or skewed beyond the warning threshold
error     every collector failing; or no successful upload for more than ``upload_error_after``
          (10 min) while more than the error threshold (10,000) samples are pending
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

OK, DEGRADED, ERROR = "ok", "degraded", "error"
_RANK = {OK: 0, DEGRADED: 1, ERROR: 2}


@dataclass(frozen=True)
class Thresholds:
    pending_degraded: int = 5_000
    pending_error: int = 10_000
    upload_stale_factor: float = 2.0
    upload_error_after: float = 600.0
    skew_warn_ms: float = 2_000.0
    # A request on the wire longer than this many times remote.timeout hangs somewhere the
    # timeout does not reach (a name lookup, a kernel that keeps retrying a connect).
    in_flight_factor: float = 2.0


@dataclass(frozen=True)
class CollectorState:
    name: str
    runs: int
    failures: int
    last_error: str | None
    degraded: bool = False          # partly failing (e.g. one SRT source of several)
    last_success_wall: float | None = None
    # Per source of a collector that has several (SRT): name, type, target, status
    # ("ok"/"failing"), errors, failing_polls, last_error (masked, cut), last_ok_ms.
    sources: Sequence[Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class Snapshot:
    now_wall: float
    started_wall: float
    collectors: Sequence[CollectorState]
    upload_enabled: bool
    upload_interval: float
    destination: str
    last_upload_wall: float | None
    last_upload_error: str | None
    pending: int
    oldest_pending_ms: int | None
    dead_letters: int
    db_bytes: int
    wal_bytes: int
    dropped_unsent: int
    held_samples: int
    clock_trusted: bool
    clock_reason: str
    skew_ms: float | None
    skew_url: str | None
    unstored: int = 0               # samples held in memory because the database cannot be written
    # The destination refuses uploads as such (an HTML 400, a proxy's answer): why.
    upload_refused: str | None = None
    # How long the request on the wire now has been waiting (None: none is), and remote.timeout.
    upload_in_flight_s: float | None = None
    upload_timeout: float = 10.0
    extra: dict[str, object] = field(default_factory=dict)


def rfc3339(wall: float | None) -> str | None:
    if wall is None:
        return None
    stamp = datetime.fromtimestamp(wall, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def worst(*statuses: str) -> str:
    return max(statuses, key=lambda s: _RANK[s]) if statuses else OK


def collector_status(state: CollectorState) -> str:
    if state.runs and state.last_error is not None:
        return ERROR
    if state.degraded:
        return DEGRADED
    return OK


def _sources(state: CollectorState) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for source in state.sources or ():
        entry = {k: v for k, v in source.items() if k != "last_ok_ms"}
        last_ok = source.get("last_ok_ms")
        entry["last_ok"] = rfc3339(last_ok / 1000) if isinstance(last_ok, (int, float)) else None
        out.append(entry)
    return out


def _partly_failing(state: CollectorState) -> str:
    failing = [str(s.get("name")) for s in state.sources or () if s.get("status") == "failing"]
    if not failing:
        return state.name
    return f"{state.name} ({len(failing)} of {len(state.sources or ())} sources failing: {', '.join(failing)})"


def evaluate(snap: Snapshot, limits: Thresholds) -> dict[str, object]:
    """The /health document. ``status`` is the worst of the components'."""
    collectors: dict[str, dict[str, object]] = {}
    for c in snap.collectors:
        collectors[c.name] = {"status": collector_status(c), "runs": c.runs, "failures": c.failures,
                              "last_error": c.last_error, "last_success": rfc3339(c.last_success_wall)}
        if c.sources is not None:
            collectors[c.name]["sources"] = _sources(c)
    failing = [c for c in snap.collectors if c.runs and c.last_error is not None]
    if snap.collectors and len(failing) == len(snap.collectors):
        collectors_status, collectors_reason = ERROR, "every collector is failing"
    elif failing:
        collectors_status, collectors_reason = DEGRADED, f"{len(failing)} collector(s) failing: " + ", ".join(
            c.name for c in failing)
    elif any(c.degraded for c in snap.collectors):
        collectors_status = DEGRADED
        collectors_reason = "partly failing: " + ", ".join(
            _partly_failing(c) for c in snap.collectors if c.degraded)
    else:
        collectors_status, collectors_reason = OK, "all collectors healthy"

    upload_status, upload_reason = OK, "uploads keep up"
    since = snap.now_wall - (snap.last_upload_wall or snap.started_wall)
    if not snap.upload_enabled:
        upload_reason = "remote upload disabled"
    elif snap.pending > 0:
        stale = since > limits.upload_stale_factor * snap.upload_interval
        if since > limits.upload_error_after and snap.pending > limits.pending_error:
            upload_status = ERROR
            upload_reason = f"no upload for {since:.0f}s with {snap.pending} samples pending"
        elif stale:
            upload_status = DEGRADED
            upload_reason = f"no successful upload for {since:.0f}s"
        if snap.pending >= limits.pending_degraded:
            upload_status = worst(upload_status, DEGRADED)
            if upload_status == DEGRADED and not stale:
                upload_reason = f"{snap.pending} samples pending"
        if snap.upload_refused is not None and upload_status == OK:
            # Valid samples are being refused: not "ok", even while a recent success (just
            # before the refusals began) keeps the staleness rule quiet.
            upload_status, upload_reason = DEGRADED, f"destination refuses uploads: {snap.upload_refused}"
    in_flight = snap.upload_in_flight_s
    hung = in_flight is not None and in_flight > limits.in_flight_factor * snap.upload_timeout
    if snap.upload_enabled and hung and upload_status == OK:
        upload_status = DEGRADED
        upload_reason = (f"a request has been in flight for {in_flight:.0f}s, more than "
                         f"{limits.in_flight_factor:g} x remote.timeout ({snap.upload_timeout:g}s): "
                         "the destination or the uplink hangs")

    time_status, time_reason = OK, snap.clock_reason
    if not snap.clock_trusted:
        time_status, time_reason = DEGRADED, f"clock not trusted: {snap.clock_reason}; samples held"
    elif snap.skew_ms is not None and abs(snap.skew_ms) > limits.skew_warn_ms:
        time_status, time_reason = DEGRADED, f"clock off by {snap.skew_ms:.0f} ms"

    storage_status, storage_reason = OK, "storing"
    if snap.unstored:
        storage_status = DEGRADED
        storage_reason = f"cannot write the database (disk full?): {snap.unstored} samples held in memory"
    elif snap.dropped_unsent:
        storage_status, storage_reason = DEGRADED, "storage.max_size reached: oldest unsent samples dropped"
    overall = worst(collectors_status, upload_status, time_status, storage_status)
    return {
        "status": overall,
        "timestamp": rfc3339(snap.now_wall),
        "started": rfc3339(snap.started_wall),
        "components": {
            "collectors": {"status": collectors_status, "reason": collectors_reason, "collectors": collectors},
            "uploader": {
                "status": upload_status, "reason": upload_reason, "enabled": snap.upload_enabled,
                "destination": snap.destination, "last_success": rfc3339(snap.last_upload_wall),
                "last_error": snap.last_upload_error, "pending": snap.pending,
                "oldest_pending": rfc3339(snap.oldest_pending_ms / 1000) if snap.oldest_pending_ms else None,
                "dead_letters": snap.dead_letters,
                "in_flight_seconds": round(in_flight, 1) if in_flight is not None else None,
            },
            "storage": {"status": storage_status, "reason": storage_reason, "db_bytes": snap.db_bytes,
                        "wal_bytes": snap.wal_bytes, "dropped_unsent": snap.dropped_unsent,
                        "held_samples": snap.held_samples, "unstored": snap.unstored},
            "time": {"status": time_status, "reason": time_reason, "trusted": snap.clock_trusted,
                     "skew_ms": snap.skew_ms, "skew_url": snap.skew_url},
        },
        **snap.extra,
    }
