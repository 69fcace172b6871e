"""/health says which SRT source fails and why (issue 18): collectors.srt.sources lists each
source with its name, ok/failing and, while it fails, its last error (masked, at most 200
characters); the error is gone once the source answers again."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from belabox_metrics.health.status import CollectorState, Snapshot, Thresholds, evaluate
from tests.unit.test_srt_support import FIXTURES, http_server, make_collector, now_ms

LIVE = (FIXTURES / "openirl-real" / "stats_legacy_live_1.json").read_text()  # publisher "live"
KEY = "srcHealth-Key-83d1f0"
LONG_APP = "a" * 150


def snapshot(collector_state: CollectorState) -> Snapshot:
    return Snapshot(now_wall=1_700_000_100.0, started_wall=1_700_000_000.0, collectors=[collector_state],
                    upload_enabled=False, upload_interval=10.0, destination="http://vm/api/v1/import",
                    last_upload_wall=None, last_upload_error=None, pending=0, oldest_pending_ms=None,
                    dead_letters=0, db_bytes=0, wal_bytes=0, dropped_unsent=0, held_samples=0,
                    clock_trusted=True, clock_reason="plausible", skew_ms=None, skew_url=None)


def srt_health(collector: Any) -> dict[str, Any]:
    state = CollectorState("srt", 1, 0, collector.last_error if not collector.degraded else None,
                           degraded=collector.degraded, sources=collector.source_status())
    doc = evaluate(snapshot(state), Thresholds())
    return doc["components"]["collectors"]  # type: ignore[index,no-any-return]


def test_each_source_status_masked_cut_and_cleared_on_recovery(tmp_path: Path) -> None:
    key_file = tmp_path / "sls-api-key"
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o600)
    with http_server() as server:
        base = f"http://127.0.0.1:{server.port}"
        server.set("/good", LIVE)
        # a server whose error text echoes the key it was sent
        server.set("/keyed", json.dumps({"status": "error", "message": f"key {KEY} is not valid"}))
        # an app name for a long stream id: an error text longer than 200 characters
        long_id = {"status": "ok", "publishers": {f"{LONG_APP}/feed1": json.loads(LIVE)["publishers"]["live"]}}
        server.set("/long", json.dumps(long_id))
        collector = make_collector([
            {"type": "sls", "url": base + "/good", "stream": "live"},
            {"type": "sls", "url": base + "/keyed", "api_key_file": str(key_file)},
            {"type": "sls", "url": base + "/long", "stream": LONG_APP},
        ])
        collector.collect(now_ms())
        part = srt_health(collector)
        assert part["status"] == "degraded"
        assert part["reason"] == "partly failing: srt (2 of 3 sources failing: sls#1, sls#2)"
        sources = {s["name"]: s for s in part["collectors"]["srt"]["sources"]}
        assert list(sources) == ["sls#0", "sls#1", "sls#2"]
        assert sources["sls#0"]["status"] == "ok" and sources["sls#0"]["last_error"] is None
        assert sources["sls#0"]["last_ok"] is not None and sources["sls#0"]["target"] == f"sls {base}"  # no path, no query
        assert sources["sls#1"]["status"] == "failing"
        assert KEY not in json.dumps(part) and "key *** is not valid" in sources["sls#1"]["last_error"]
        assert sources["sls#2"]["status"] == "failing" and sources["sls#2"]["failing_polls"] == 1
        assert "is only part of the stream id" in sources["sls#2"]["last_error"]
        assert len(sources["sls#2"]["last_error"]) == 200  # the source's own text is longer
        assert len(collector.source_status()[2]["last_error"]) == 200

        server.set("/keyed", LIVE)
        server.set("/long", json.dumps({"status": "ok", "publishers": {LONG_APP: long_id["publishers"][f"{LONG_APP}/feed1"]}}))
        collector.collect(now_ms())
        part = srt_health(collector)
        assert part["status"] == "ok"
        assert [(s["name"], s["status"], s["last_error"], s["failing_polls"])
                for s in part["collectors"]["srt"]["sources"]] == [
            ("sls#0", "ok", None, 0), ("sls#1", "ok", None, 0), ("sls#2", "ok", None, 0)]
        assert [s["errors"] for s in part["collectors"]["srt"]["sources"]] == [0, 1, 1]
        collector.close()


def test_collectors_without_sources_have_no_sources_key() -> None:
    doc = evaluate(dataclasses.replace(snapshot(CollectorState("cpu", 3, 0, None))), Thresholds())
    assert "sources" not in doc["components"]["collectors"]["collectors"]["cpu"]  # type: ignore[index]
