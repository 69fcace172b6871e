"""Graduated health rules, on snapshots with an injected time: no threads, no HTTP."""

from __future__ import annotations

import dataclasses

import pytest

from belabox_metrics.health.status import CollectorState, Snapshot, Thresholds, evaluate

T0 = 1_700_000_000.0
LIMITS = Thresholds()


def snap(**changes: object) -> Snapshot:
    base = Snapshot(
        now_wall=T0 + 100, started_wall=T0, collectors=[
            CollectorState("cpu", 10, 0, None), CollectorState("memory", 10, 0, None)],
        upload_enabled=True, upload_interval=10.0, destination="http://vm/api/v1/import",
        last_upload_wall=T0 + 95, last_upload_error=None, pending=50, oldest_pending_ms=None, dead_letters=0,
        db_bytes=4096, wal_bytes=0, dropped_unsent=0, held_samples=0, clock_trusted=True,
        clock_reason="plausible", skew_ms=None, skew_url=None)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def status(**changes: object) -> str:
    return str(evaluate(snap(**changes), LIMITS)["status"])


def test_all_good_is_ok() -> None:
    assert status() == "ok"


def test_one_failing_collector_degrades_all_failing_errors() -> None:
    one = [CollectorState("cpu", 10, 1, "boom"), CollectorState("memory", 10, 0, None)]
    both = [CollectorState("cpu", 10, 1, "boom"), CollectorState("memory", 10, 3, "gone")]
    assert status(collectors=one) == "degraded"
    assert status(collectors=both) == "error"
    doc = evaluate(snap(collectors=one), LIMITS)
    collectors = doc["components"]["collectors"]  # type: ignore[index]
    assert collectors["collectors"]["cpu"]["last_error"] == "boom"  # type: ignore[index]


def test_partly_failing_collector_degrades() -> None:
    assert status(collectors=[CollectorState("srt", 5, 0, None, degraded=True)]) == "degraded"


@pytest.mark.parametrize(("since", "pending", "expected"), [
    (15, 50, "ok"),          # within 2x the 10 s interval
    (25, 50, "degraded"),    # more than 2x
    (95, 50, "degraded"),    # more than 10x, but little pending: still only degraded
    (700, 10_001, "error"),  # > 10 min and > 10,000 pending
    (700, 9_000, "degraded"),
    (25, 0, "ok"),           # nothing to upload: not stale
])
def test_upload_staleness(since: float, pending: int, expected: str) -> None:
    assert status(last_upload_wall=T0 + 1000 - since, now_wall=T0 + 1000, pending=pending) == expected


@pytest.mark.parametrize(("pending", "expected"), [(4_999, "ok"), (5_000, "degraded"), (10_000, "degraded")])
def test_pending_thresholds(pending: int, expected: str) -> None:
    assert status(pending=pending) == expected


def test_never_uploaded_counts_from_start() -> None:
    assert status(last_upload_wall=None, now_wall=T0 + 15) == "ok"
    assert status(last_upload_wall=None, now_wall=T0 + 30) == "degraded"


def test_configurable_thresholds() -> None:
    strict = Thresholds(pending_degraded=10, pending_error=20, upload_error_after=30)
    assert str(evaluate(snap(pending=15), strict)["status"]) == "degraded"
    assert str(evaluate(snap(pending=25, last_upload_wall=T0 + 50), strict)["status"]) == "error"


def test_time_component() -> None:
    assert status(clock_trusted=False, clock_reason="1970") == "degraded"
    assert status(skew_ms=2500.0) == "degraded"
    assert status(skew_ms=-1500.0) == "ok"


def test_dropped_samples_degrade_storage() -> None:
    assert status(dropped_unsent=3) == "degraded"


def test_json_shape_and_rfc3339() -> None:
    doc = evaluate(snap(), LIMITS)
    assert set(doc) >= {"status", "timestamp", "started", "components"}
    assert set(doc["components"]) == {"collectors", "uploader", "storage", "time"}  # type: ignore[arg-type]
    assert doc["timestamp"] == "2023-11-14T22:15:00.000Z"
    uploader = doc["components"]["uploader"]  # type: ignore[index]
    assert uploader["last_success"] == "2023-11-14T22:14:55.000Z" and uploader["pending"] == 50
    storage = doc["components"]["storage"]  # type: ignore[index]
    assert storage["db_bytes"] == 4096 and "wal_bytes" in storage


def test_a_destination_refusing_uploads_is_not_ok_even_just_after_a_success() -> None:
    refused = "HTTP 400: <html><head><title>400 The plain HTTP request was sent to HTTPS port"
    doc = evaluate(snap(upload_refused=refused, last_upload_error="destination refuses uploads ..."), LIMITS)
    uploader = doc["components"]["uploader"]  # type: ignore[index]
    assert doc["status"] == "degraded" and uploader["status"] == "degraded"
    assert "destination refuses uploads" in uploader["reason"] and "plain HTTP" in uploader["reason"]
    assert status(upload_refused=refused, pending=0) == "ok"  # nothing waiting: nothing refused


def test_a_request_in_flight_beyond_twice_the_timeout_degrades_and_shows() -> None:
    """A request the timeout does not end (a name lookup that hangs, a connect the kernel
    keeps retrying) shows its age; past 2 x remote.timeout the uploader is degraded."""
    within = evaluate(snap(upload_in_flight_s=19.0, upload_timeout=10.0), LIMITS)
    assert within["status"] == "ok"
    assert within["components"]["uploader"]["in_flight_seconds"] == 19.0  # type: ignore[index]
    hung = evaluate(snap(upload_in_flight_s=21.0, upload_timeout=10.0), LIMITS)
    assert hung["status"] == "degraded"
    assert "in flight for 21s" in hung["components"]["uploader"]["reason"]  # type: ignore[index]
    assert evaluate(snap(), LIMITS)["components"]["uploader"]["in_flight_seconds"] is None  # type: ignore[index]
    assert status(upload_in_flight_s=60.0, upload_enabled=False) == "ok"
