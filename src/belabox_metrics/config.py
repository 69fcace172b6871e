"""YAML config -> validated, frozen settings.

Every problem becomes one ``ConfigError`` naming the key and the fix; the CLI turns it into
one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from belabox_metrics.collectors.base import MetricSettings, lookup
from belabox_metrics.priority import CLASS_NAMES, PrioritySettings, class_index
from belabox_metrics.tlsconfig import TlsSettings, parse_tls
from belabox_metrics.upload.bandwidth import BandwidthSettings
from belabox_metrics.upload.encode import GZIP_LEVEL
from belabox_metrics.validation import ConfigError, Reader, join_key

DEFAULT_CONFIG_PATH = "/etc/belabox-metrics/config.yaml"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
REMOTE_FORMATS = ("json", "vm-jsonl", "remote-write")
DEVICE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


@dataclass(frozen=True)
class DeviceSettings:
    id: str


@dataclass(frozen=True)
class StorageSettings:
    path: str
    retention: float = 7 * 86400.0          # uploaded samples older than this are deleted
    max_size: int = 512 * 1024 * 1024       # while offline, the oldest unsent samples go beyond this
    wal_checkpoint_interval: float = 3600.0
    wal_checkpoint_size: int = 64 * 1024 * 1024
    coalesce_after: float | None = None     # off: keep full resolution
    coalesce_interval: float = 60.0


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    jitter: float = 0.2


@dataclass(frozen=True)
class RemoteSettings:
    url: str
    enabled: bool = True
    interval: float = 10.0
    timeout: float = 10.0
    batch_size: int = 10_000
    max_request_bytes: int = 256 * 1024
    format: str = "json"
    compression_level: int = GZIP_LEVEL     # gzip's 1-9 for json and vm-jsonl
    shutdown_grace: float = 5.0
    newest_first: bool = False
    max_sample_age: float = 30 * 86400.0
    max_future: float = 86400.0
    token_file: str | None = None
    proxy: str | None = None                # None: HTTPS_PROXY / HTTP_PROXY / NO_PROXY; "none": direct
    tls: TlsSettings = field(default_factory=lambda: TlsSettings())
    retry: RetrySettings = field(default_factory=lambda: RetrySettings())
    bandwidth: BandwidthSettings = field(default_factory=lambda: BandwidthSettings())
    priority: PrioritySettings = field(default_factory=lambda: PrioritySettings())


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class HealthSettings:
    listen: str | None = "127.0.0.1:9469"   # None: no health server
    degraded_threshold: int = 5_000         # pending samples
    error_threshold: int = 10_000
    upload_error_after: float = 600.0


@dataclass(frozen=True)
class MonitoringSettings:
    self_metrics: bool = True
    self_metrics_interval: float = 30.0
    clock_skew_url: str | None = None
    clock_skew_check_interval: float = 300.0
    clock_skew_warn_threshold_ms: int = 2_000
    hold_untrusted_clock: bool = True


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
    health: HealthSettings = field(default_factory=HealthSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)

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


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, first_line: int, second_line: int) -> None:
        super().__init__(f"{key} twice")
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML lets the last of two equal keys win, silently: an edit appended below an old
    value would be used and the old one shown to whoever reads the top. Refuse it."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: construct_mapping says so itself
                continue
            if first != key_node.start_mark.line + 1:
                raise DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep)


def parse_config(text: str, *, source: str = "<memory>", base_dir: str | None = None) -> Settings:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except DuplicateKey as exc:
        raise ConfigError(str(exc.key), f"is set twice in {source} (lines {exc.first_line} and {exc.second_line}); "
                          "the second would silently win", "keep one of the two lines") from None
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
    storage = StorageSettings(
        path=_resolve(os.path.expanduser(raw_path), base_dir),
        retention=storage_r.duration("retention", 7 * 86400.0, minimum=60),
        max_size=storage_r.size("max_size", 512 * 1024 * 1024),
        wal_checkpoint_interval=storage_r.duration("wal_checkpoint_interval", 3600.0, minimum=1),
        wal_checkpoint_size=storage_r.size("wal_checkpoint_size", 64 * 1024 * 1024),
        coalesce_after=storage_r.duration("coalesce_after", None, minimum=60),
        coalesce_interval=storage_r.duration("coalesce_interval", 60.0, minimum=1),
    )
    if storage.max_size < 1024 * 1024:
        storage_r.fail("max_size", f"{storage.max_size} bytes is too small to hold a backlog",
                       "use at least 1MiB (e.g. 512MiB)")
    storage_r.finish()

    remote = _parse_remote(root.section("remote"), base_dir)

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

    health = _parse_health(root.section("health"))
    monitoring = _parse_monitoring(root.section("monitoring"))
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
    return Settings(device, storage, remote, logging_settings, host, metrics, source, health, monitoring)


def _parse_health(reader: Reader) -> HealthSettings:
    if "listen" in reader.data and reader.data["listen"] is None:
        # `listen: ~` or `listen:` would otherwise become the default, the opposite of
        # what someone who emptied it probably meant.
        reader.fail("listen", "is empty (null)", "write `listen: off` to disable the health endpoint, "
                    "or HOST:PORT like 127.0.0.1:9469; remove the line for the default")
    if reader.data.get("listen") is False:
        reader.raw("listen")
        text = "off"  # YAML 1.1 reads a bare `off` (or `no`, `false`) as false
    else:
        text = reader.string("listen", "127.0.0.1:9469", example="127.0.0.1:9469")
    listen: str | None = None
    if text not in ("off", "none", "disabled"):
        listen = text
        try:
            parse_listen(text)
        except ValueError as exc:
            reader.fail("listen", str(exc), "write HOST:PORT like 127.0.0.1:9469, or `off`")
    health = HealthSettings(
        listen=listen,
        degraded_threshold=reader.integer("degraded_threshold", 5_000, minimum=1),
        error_threshold=reader.integer("error_threshold", 10_000, minimum=1),
        upload_error_after=reader.duration("upload_error_after", 600.0, minimum=1),
    )
    if health.error_threshold < health.degraded_threshold:
        reader.fail("error_threshold", "is below degraded_threshold", "make error_threshold >= degraded_threshold")
    reader.finish()
    return health


def _parse_monitoring(reader: Reader) -> MonitoringSettings:
    url = reader.string("clock_skew_url", None, example="https://time.example.org/")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            reader.fail("clock_skew_url", f"{url!r} is not an http:// or https:// URL",
                        "use a URL whose server sends a correct Date header (not the ingest URL)")
    monitoring = MonitoringSettings(
        self_metrics=reader.boolean("self_metrics", True),
        self_metrics_interval=reader.duration("self_metrics_interval", 30.0, minimum=1),
        clock_skew_url=url,
        clock_skew_check_interval=reader.duration("clock_skew_check_interval", 300.0, minimum=1),
        clock_skew_warn_threshold_ms=reader.integer("clock_skew_warn_threshold_ms", 2_000, minimum=1),
        hold_untrusted_clock=reader.boolean("hold_untrusted_clock", True),
    )
    reader.finish()
    return monitoring


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9469' or '[::1]:9469' -> (host, port)."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def _parse_remote(reader: Reader, base_dir: str | None = None) -> RemoteSettings:
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
        batch_size=reader.integer("batch_size", 10_000, minimum=1, maximum=1_000_000),
        max_request_bytes=reader.size("max_request_bytes", 256 * 1024),
        format=reader.string("format", "json", choices=REMOTE_FORMATS),
        compression_level=reader.integer("compression_level", GZIP_LEVEL, minimum=1, maximum=9),
        shutdown_grace=reader.duration("shutdown_grace", 5.0, minimum=0, maximum=300),
        newest_first=reader.boolean("newest_first", False),
        max_sample_age=reader.duration("max_sample_age", 30 * 86400.0, minimum=60),
        max_future=reader.duration("max_future", 86400.0, minimum=1, maximum=2 * 86400.0),
        token_file=reader.string("token_file", None, example="/etc/belabox-metrics/api-token"),
        proxy=_parse_proxy(reader),
        tls=parse_tls(reader.section("tls"), base_dir),
        retry=_parse_retry(reader.section("retry")),
        bandwidth=_parse_bandwidth(reader.section("bandwidth")),
        priority=_parse_priority(reader.section("priority")),
    )
    if settings.tls.configured and parts.scheme != "https":
        reader.fail("tls", "is set but remote.url is not https://",
                    "use an https:// remote.url, or remove remote.tls")
    if settings.max_request_bytes < 1024:
        reader.fail("max_request_bytes", "is below 1KiB", "use e.g. 256KiB")
    # VictoriaMetrics answers 204 to a remote-write body sent to /api/v1/import and keeps nothing.
    wrong_path = {"remote-write": "/api/v1/import", "vm-jsonl": "/api/v1/write"}.get(settings.format)
    if wrong_path is not None and parts.path.rstrip("/").endswith(wrong_path):
        right_path = "/api/v1/write" if settings.format == "remote-write" else "/api/v1/import"
        reader.fail("url", f"{wrong_path} does not take format {settings.format}",
                    f"send {settings.format} to {right_path}, or change remote.format")
    if settings.format == "remote-write":
        if reader.has("compression_level"):
            reader.fail("compression_level", "remote-write is snappy-compressed, which has no levels",
                        "remove compression_level (it sets gzip's level for json and vm-jsonl)")
        from belabox_metrics.upload import remote_write

        if remote_write.snappy_missing():
            reader.fail("format", "remote-write needs snappy compression from the cramjam package, "
                        "which is not installed", f"{remote_write.INSTALL_HINT}, or use format: vm-jsonl")
    reader.finish()
    return settings


def _parse_proxy(reader: Reader) -> str | None:
    proxy: str | None = reader.string("proxy", None, example="http://proxy.example.org:3128")
    if proxy is None or proxy.strip().lower() in ("none", "direct"):
        return proxy
    from belabox_metrics.httpclient import parse_proxy

    try:
        parse_proxy(proxy)  # registers user:password for masking in every log line
    except ValueError as exc:
        reader.fail("proxy", str(exc), "write http://HOST:PORT (http://USER:PASSWORD@HOST:PORT with "
                    "credentials), or `none` to ignore HTTPS_PROXY / HTTP_PROXY")
    return proxy


def _parse_bandwidth(reader: Reader) -> BandwidthSettings:
    bandwidth = BandwidthSettings(
        max_bytes_per_second=reader.size("max_bytes_per_second", 64 * 1024),
        live_bytes_per_second=reader.size("live_bytes_per_second", 8 * 1024),
        burst_bytes=reader.size("burst_bytes", 256 * 1024),
        live_hold=reader.duration("live_hold", 15.0, minimum=0.1),
        live_settle=reader.duration("live_settle", 30.0, minimum=0.0, maximum=600),
    )
    if bandwidth.live_bytes_per_second > bandwidth.max_bytes_per_second > 0:
        reader.fail("live_bytes_per_second", "is above max_bytes_per_second",
                    "the live budget protects the stream: make it lower than max_bytes_per_second")
    if bandwidth.live_bytes_per_second == 0 and bandwidth.max_bytes_per_second != 0:
        reader.fail("live_bytes_per_second", "is 0 while max_bytes_per_second limits",
                    "use a small rate like 8KiB (0 means no limit only when both are 0)")
    reader.finish()
    return bandwidth


def _parse_priority(reader: Reader) -> PrioritySettings:
    defaults = PrioritySettings()
    classes = defaults.classes
    if reader.raw("classes", None) is not None:
        given = reader.section("classes")
        for name in given.data:
            if name not in CLASS_NAMES:
                given.fail(str(name), "is not a priority class", f"use {', '.join(CLASS_NAMES)}")
        patterns = [given.strings(name, []) for name in CLASS_NAMES]
        for name, listed in zip(CLASS_NAMES, patterns, strict=True):
            if any(not p.strip() for p in listed):
                given.fail(name, "holds an empty pattern", 'remove it, or write a pattern like "srt.*"')
        classes = tuple(tuple(listed) for listed in patterns)
    default_class = class_index(reader.string("default_class", "P2", choices=CLASS_NAMES))
    live_names = reader.strings("while_live", [CLASS_NAMES[i] for i in defaults.while_live])
    for name in live_names:
        if name not in CLASS_NAMES:
            reader.fail("while_live", f"{name!r} is not a priority class", f"use {', '.join(CLASS_NAMES)}")
    if "P0" not in live_names:
        reader.fail("while_live", "does not include P0",
                    "P0 is what you watch during a stream (link health, temperatures): list it first")
    reader.finish()
    return PrioritySettings(classes=classes, default_class=default_class,
                            while_live=tuple(sorted({class_index(n) for n in live_names})))


def _parse_retry(reader: Reader) -> RetrySettings:
    retry = RetrySettings(
        max_attempts=reader.integer("max_attempts", 5, minimum=1, maximum=100),
        backoff_base=reader.duration("backoff_base", 1.0, minimum=0.001),
        backoff_max=reader.duration("backoff_max", 60.0, minimum=0.001),
        jitter=reader.number("jitter", 0.2, minimum=0.0, maximum=1.0),
    )
    if retry.backoff_max < retry.backoff_base:
        reader.fail("backoff_max", "is shorter than backoff_base", "make backoff_max >= backoff_base")
    reader.finish()
    return retry


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
