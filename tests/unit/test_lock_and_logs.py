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


def other_names(tmp_path: Path, db: Path) -> dict[str, str]:
    """Every other way to name the same database file."""
    (tmp_path / "link-dir").mkdir()
    (tmp_path / "link-dir" / "m.db").symlink_to(db)
    (tmp_path / "hard").mkdir()
    os.link(db, tmp_path / "hard" / "copy.db")
    return {"symlink": str(tmp_path / "link-dir" / "m.db"), "dot": f"{tmp_path}/./data/m.db",
            "dotdot": f"{tmp_path}/data/../data/m.db", "hard link": str(tmp_path / "hard" / "copy.db")}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the database file itself is flocked on Linux")
def test_a_second_lock_through_any_other_name_of_the_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "m.db"
    db.write_bytes(b"")
    names = other_names(tmp_path, db)
    with ProcessLock(str(db)):
        for how, name in names.items():
            with pytest.raises(AlreadyRunning):
                ProcessLock(name).acquire()
                pytest.fail(f"a second lock through a {how} was granted")
    for name in names.values():  # released: each name locks again
        with ProcessLock(name):
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the database file itself is flocked on Linux")
def test_a_database_created_after_the_lock_is_locked_once_held(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "m.db"
    with ProcessLock(str(db)) as first:
        db.write_bytes(b"")  # the agent creates the database after taking the lock
        first.hold_database()
        os.link(db, tmp_path / "copy.db")
        with pytest.raises(AlreadyRunning):
            ProcessLock(str(tmp_path / "copy.db")).acquire()
        # Quarantine moves a corrupt file aside and a fresh one takes its place.
        os.rename(db, tmp_path / "data" / "m.db.corrupt")
        db.write_bytes(b"")
        first.hold_database()
        os.link(db, tmp_path / "copy2.db")
        with pytest.raises(AlreadyRunning):
            ProcessLock(str(tmp_path / "copy2.db")).acquire()


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


def test_foreign_text_masks_before_it_cuts() -> None:
    token = "cut-token-0123456789abcdef"
    logs.register_secret(token)
    body = ("x" * 190 + f'auth token "Bearer {token}" is not valid here').encode()
    shown = logs.foreign_text(body, 200)
    assert "cut-token" not in shown and len(shown) <= 200  # a cut mid-token leaves no part of it
    out = io.StringIO()
    logs.MaskingWriter(out).write(f"last error: {token}\n")
    assert token not in out.getvalue() and "***" in out.getvalue()


def test_srt_source_secrets_are_masked_once_read(tmp_path: Path) -> None:
    from belabox_metrics.collectors.srt.common import basic_authorization, read_secret_file

    secret = tmp_path / "key"
    secret.write_text("raw-api-key-5d1c\n")
    secret.chmod(0o600)
    read_secret_file(str(secret))
    assert logs.mask_secrets("Authorization: raw-api-key-5d1c") == "Authorization: ***"
    credentials = tmp_path / "cred"
    credentials.write_text("streamer:pass-word-9z\n")
    credentials.chmod(0o600)
    header = basic_authorization(str(credentials))
    assert header is not None
    assert logs.mask_secrets(f"refused {header} (pass-word-9z)") == "refused Basic *** (***)"
