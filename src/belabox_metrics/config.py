"""YAML config -> validated, frozen settings.

Every problem becomes one ``ConfigError`` naming the key and the fix; the CLI turns it into
one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from belabox_metrics.collectors.base import MetricSettings, lookup
from belabox_metrics.validation import ConfigError, Reader, join_key

DEFAULT_CONFIG_PATH = "/etc/belabox-metrics/config.yaml"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
REMOTE_FORMATS = ("json",)
DEVICE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


@dataclass(frozen=True)
class DeviceSettings:
    id: str


@dataclass(frozen=True)
class StorageSettings:
    path: str


@dataclass(frozen=True)
class RemoteSettings:
    url: str
    enabled: bool = True
    interval: float = 10.0
    timeout: float = 10.0
    batch_size: int = 500
    format: str = "json"
    shutdown_grace: float = 5.0


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class HostSettings:
    proc_root: str = "/proc"
    sys_root: str = "/sys"


@dataclass(frozen=True)
class Settings:
    device: DeviceSettings
    storage: StorageSettings
    remote: RemoteSettings
    logging: LoggingSettings
    host: HostSettings
    metrics: tuple[MetricSettings, ...]
    source: str = "<memory>"

    @property
    def enabled_metrics(self) -> tuple[MetricSettings, ...]:
        return tuple(m for m in self.metrics if m.enabled)


def load_config(path: str) -> Settings:
    """Read and validate a config file. Raises ConfigError on any problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError("", f"config file {path} does not exist",
                          "create it (configs/config.yaml is a commented example) or pass "
                          "--config PATH") from None
    except IsADirectoryError:
        raise ConfigError("", f"config path {path} is a directory",
                          "pass the YAML file itself with --config PATH") from None
    except PermissionError:
        raise ConfigError("", f"config file {path} is not readable by this user",
                          "fix its permissions or run as the service user") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"config file {path} is not UTF-8 text ({exc.reason})",
                          "save it as UTF-8") from None
    base_dir = os.path.dirname(os.path.abspath(path))
    return parse_config(text, source=path, base_dir=base_dir)


def parse_config(text: str, *, source: str = "<memory>", base_dir: str | None = None) -> Settings:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError("", f"{source} is not valid YAML{where}: {problem}",
                          "check indentation and quoting on that line") from None
    if data is None:
        raise ConfigError("", f"{source} is empty",
                          "write at least `device:`, `storage:`, `remote:` and `metrics:`")
    root = Reader(data, "")
    settings = _parse_root(root, source, base_dir or os.getcwd())
    root.finish()
    return settings


def _parse_root(root: Reader, source: str, base_dir: str) -> Settings:
    device_r = root.section("device")
    device = DeviceSettings(
        id=device_r.string("id", pattern=DEVICE_ID_PATTERN, example="belabox-001",
                           pattern_fix="use 1-64 letters, digits, '.', '_' or '-', "
                                       "starting with a letter or digit")
    )
    device_r.finish()

    storage_r = root.section("storage")
    raw_path = storage_r.string("path", example="/var/lib/belabox-metrics/metrics.db")
    storage = StorageSettings(path=_resolve(os.path.expanduser(raw_path), base_dir))
    storage_r.finish()

    remote = _parse_remote(root.section("remote"))

    logging_r = root.section("logging")
    logging_settings = LoggingSettings(
        level=logging_r.string("level", "info", choices=LOG_LEVELS),
        format=logging_r.string("format", "auto", choices=LOG_FORMATS),
    )
    logging_r.finish()

    host_r = root.section("host")
    host = HostSettings(
        proc_root=host_r.string("proc_root", "/proc", example="/proc"),
        sys_root=host_r.string("sys_root", "/sys", example="/sys"),
    )
    host_r.finish()

    metrics = tuple(root.items("metrics", _parse_metric))
    seen: dict[str, int] = {}
    for index, metric in enumerate(metrics):
        if metric.name in seen:
            raise ConfigError(join_key("metrics", index) + ".name",
                              f"{metric.name!r} is listed twice (also metrics[{seen[metric.name]}])",
                              "keep one entry per metric name")
        seen[metric.name] = index
    if not any(m.enabled for m in metrics):
        raise ConfigError("metrics", "no metric is enabled",
                          "set `enabled: true` on at least one entry")
    return Settings(device, storage, remote, logging_settings, host, metrics, source)


def _parse_remote(reader: Reader) -> RemoteSettings:
    url = reader.string("url", example="http://127.0.0.1:8080/api/metrics")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        reader.fail("url", f"{url!r} is not an http:// or https:// URL",
                    "write e.g. `url: http://127.0.0.1:8080/api/metrics`")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        reader.fail("url", f"{url!r} has an invalid port", "use a port from 1 to 65535")
    if parts.username or parts.password:
        reader.fail("url", "credentials in the URL would end up in logs and process listings",
                    "remove user:password@ from the URL")
    settings = RemoteSettings(
        url=url,
        enabled=reader.boolean("enabled", True),
        interval=reader.duration("interval", 10.0, minimum=0.1, maximum=86400),
        timeout=reader.duration("timeout", 10.0, minimum=0.1, maximum=600),
        batch_size=reader.integer("batch_size", 500, minimum=1, maximum=100_000),
        format=reader.string("format", "json", choices=REMOTE_FORMATS),
        shutdown_grace=reader.duration("shutdown_grace", 5.0, minimum=0, maximum=300),
    )
    reader.finish()
    return settings


def _parse_metric(reader: Reader) -> MetricSettings:
    name = reader.string("name", example="cpu.temperature")
    spec = lookup(name, reader.key("name"))
    enabled = reader.boolean("enabled", True)
    interval = reader.duration("interval", spec.default_interval, minimum=0.1, maximum=86400)
    mock = False
    if spec.supports_mock:
        mock = reader.boolean("mock", False)
    elif reader.has("mock"):
        reader.fail("mock", f"{name} has no mock mode", "remove `mock:` from this entry")
    options: Any = spec.parse_options(reader)
    return MetricSettings(name=name, interval=interval, enabled=enabled, mock=mock, options=options)


def _resolve(path: str, base_dir: str) -> str:
    # A relative storage path is relative to the config file, not to wherever the
    # service happened to be started from.
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))
