"""Reading secrets from files: refused unless only the owner can read them."""

from __future__ import annotations

import base64
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


# Option names that hold the path of a secret file, wherever they sit in a source's options
# (SLS/MediaMTX/srtla keep `credentials_file` in their HTTP options). A new secret file
# option must be named here: tests/unit/test_configured_secrets.py fails on any `*_file`
# option of a source type that is neither here nor in NOT_SECRET_FILE_OPTIONS.
SECRET_FILE_OPTIONS = ("password_file", "token_file", "api_key_file", "credentials_file")
# Not masked: a stats file is data; the TLS files go to the ssl module as files (a private
# key is refused unless 0600 there), their content never travels in a request or a message.
NOT_SECRET_FILE_OPTIONS = ("stats_file", "ca_file", "cert_file", "key_file")


def _secret_files_in(options: Any, depth: int = 0) -> Iterator[tuple[str, str]]:
    """(option name, path) of every secret file option in ``options`` and its nested
    dataclasses."""
    fields = getattr(options, "__dataclass_fields__", None)
    if fields is None or depth > 3:
        return
    for name in fields:
        value = getattr(options, name, None)
        if name in SECRET_FILE_OPTIONS:
            if isinstance(value, str) and value:
                yield name, value
        elif getattr(value, "__dataclass_fields__", None) is not None:
            yield from _secret_files_in(value, depth + 1)


def configured_secret_file_options(settings: Any) -> Iterator[tuple[str, str]]:
    """(option name, path) of every secret file the config names: the remote token and
    each source's password, token, API key and HTTP credentials files, enabled or not."""
    if getattr(settings.remote, "token_file", None):
        yield "token_file", settings.remote.token_file
    for metric in settings.metrics:
        for source in getattr(metric.options, "sources", None) or ():
            yield from _secret_files_in(source.options)


def configured_secret_files(settings: Any) -> Iterator[str]:
    """The path of every secret file the config names (see configured_secret_file_options)."""
    for _, path in configured_secret_file_options(settings):
        yield path


def secret_forms(option: str, value: str) -> list[str]:
    """What of a secret file's content may show somewhere: the content itself and, for
    `user:password` credentials, the password alone and the Basic header's base64 (a
    server may echo the header it refused)."""
    forms = [value]
    if option == "credentials_file" and ":" in value:
        forms.append(value.partition(":")[2])
        forms.append(base64.b64encode(value.encode("utf-8")).decode("ascii"))
    return forms


def register_configured_secrets(settings: Any) -> None:
    """Register every configured secret for masking, at the start of each command: `run`
    (before any loop starts, so no log line, /health or /metrics can show a secret that a
    source has not read yet: a belaUI password is read only at login, a disabled source's
    files never), and the commands that only read (status, query, dead-letters), which
    print text from elsewhere (the agent's health, stored text, error bodies). Files this
    user cannot read are skipped (a belaUI token file appears only after the first login;
    the source registers it when it writes it)."""
    for option, path in configured_secret_file_options(settings):
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().strip()
        except (OSError, UnicodeDecodeError):
            continue
        for form in secret_forms(option, value):
            register_secret(form)
