"""Reading secrets from files: refused unless only the owner can read them."""

from __future__ import annotations

import os
import stat

from belabox_metrics.logs import register_secret
from belabox_metrics.validation import ConfigError


def read_secret_file(path: str, key: str) -> str:
    """The stripped content of a 0600-style secret file; registered for log masking."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(key, f"secret file {path} does not exist",
                          "create it (one line, the token) with mode 0600") from None
    except PermissionError:
        raise ConfigError(key, f"secret file {path} is not readable by this user",
                          "make it owned by the service user (metrics) with mode 0600") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(key, f"secret file {path} is accessible by group or others "
                               f"(mode {stat.S_IMODE(info.st_mode):04o})",
                          f"run `chmod 600 {path}`")
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(key, f"cannot read secret file {path}: {exc}", "check the file") from None
    if not value:
        raise ConfigError(key, f"secret file {path} is empty", "write the token into it")
    register_secret(value)
    return value
