"""Process lock and structured logs."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from belabox_metrics import logs
from belabox_metrics.store.lock import AlreadyRunning, ProcessLock


def test_second_lock_names_the_holder(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    with ProcessLock(db), pytest.raises(AlreadyRunning, match=f"PID {os.getpid()}"):
        ProcessLock(db).acquire()
    ProcessLock(db).acquire()  # released on exit


def test_lock_released_when_holder_is_killed(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys,time; from belabox_metrics.store.lock import ProcessLock;"
                               f"ProcessLock({db!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    with pytest.raises(AlreadyRunning, match=f"PID {holder.pid}"):
        ProcessLock(db).acquire()
    holder.kill()
    holder.wait()
    ProcessLock(db).acquire()


def test_json_log_lines_carry_fields_and_mask_secrets() -> None:
    stream = io.StringIO()
    log = logs.setup("debug", "json", stream)
    logs.register_secret("s3cr3t-token-value")
    logs.event(log, logging.INFO, "uploaded batch", batch_id="b-1", count=3, http_status=200,
               note="token is s3cr3t-token-value")
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["msg"] == "uploaded batch" and record["level"] == "info"
    assert record["batch_id"] == "b-1" and record["count"] == 3 and record["http_status"] == 200
    assert record["ts"].endswith("Z")
    assert "s3cr3t-token-value" not in stream.getvalue()


def test_console_format() -> None:
    stream = io.StringIO()
    log = logs.setup("info", "console", stream)
    logs.event(log, logging.WARNING, "collector failed", collector="cpu.temperature")
    assert "WARNING" in stream.getvalue() and "collector=cpu.temperature" in stream.getvalue()


@pytest.mark.parametrize(("url", "expected"), [
    ("http://user:pw@host:8428/api/v1/import?token=abc", "http://host:8428/api/v1/import?<redacted>"),
    ("https://example.org/x", "https://example.org/x"),
    ("http://[::1]:8080/api", "http://[::1]:8080/api"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert logs.redact_url(url) == expected
