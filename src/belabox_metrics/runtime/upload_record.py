"""The uploader's last error, kept on disk beside the database, so `metrics-collector status`
can say what went wrong also while the agent is stopped (the last success is in the
database already: upload_state.updated_at_ms).

Written only when the error changes (a new reason, or the first success after errors), never
per cycle: a flash card does not pay for a healthy uplink. Atomic (a temporary file renamed
over the old one), mode 0600; the text is /health's `last_error`, which holds no secret.
"""

from __future__ import annotations

import contextlib
import json
import os

SUFFIX = ".upload-status.json"


def path_for(db_path: str) -> str:
    return db_path + SUFFIX


class UploadRecord:
    def __init__(self, db_path: str) -> None:
        self.path = path_for(db_path)
        self.last_error: str | None = None
        previous = read(self.path)
        if previous is not None and previous.get("recovered_ms") is None:
            error = previous.get("last_error")
            self.last_error = error if isinstance(error, str) else None

    def note(self, last_error: str | None, now_ms: int) -> bool:
        """After a cycle: record a changed error, or the recovery from one. True if written."""
        if last_error == self.last_error:
            return False
        if last_error is None:
            record = read(self.path) or {}
            record["recovered_ms"] = now_ms
        else:
            record = {"last_error": last_error, "at_ms": now_ms, "recovered_ms": None}
        self.last_error = last_error
        tmp = self.path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
            os.replace(tmp, self.path)
        except OSError:  # a full disk: the next change tries again
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return False
        return True


def read(path: str) -> dict[str, object] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
