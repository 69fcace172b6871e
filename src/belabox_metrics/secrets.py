"""Reading secrets from files: refused unless only the owner can read them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Any

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


def configured_secret_files(settings: Any) -> Iterator[str]:
    """Every secret file the config names: the remote token and each source's password,
    token and API key files."""
    if getattr(settings.remote, "token_file", None):
        yield settings.remote.token_file
    for metric in settings.metrics:
        for source in getattr(metric.options, "sources", None) or ():
            for attr in ("password_file", "token_file", "api_key_file"):
                path = getattr(source.options, attr, None)
                if isinstance(path, str) and path:
                    yield path


def register_configured_secrets(settings: Any) -> None:
    """Register the configured secrets for masking in a command that only reads (status,
    query, dead-letters): what it prints came from elsewhere (the agent's health, stored
    text, error bodies) and must not show them. Files this user cannot read are skipped."""
    for path in configured_secret_files(settings):
        try:
            with open(path, encoding="utf-8") as handle:
                register_secret(handle.read().strip())
        except (OSError, UnicodeDecodeError):
            continue
