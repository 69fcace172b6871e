"""What `check-config` checks, and the part of it `run` checks before it starts.

One list, so the two agree: every config `run` refuses (exit 2), `check-config` refuses too;
what `run` would survive but run DEGRADED with (a collector with nothing to read on this
machine, a health port another process holds) is a warning in `check-config`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from belabox_metrics.config import Settings, parse_listen
from belabox_metrics.validation import ConfigError


@dataclass
class Findings:
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was read and found fine (TLS files, proxy)


def storage_problem(path: str) -> ConfigError | None:
    """Whether the agent can create and write its database (and the -wal, -shm and lock
    files beside it) at ``path``, as this user."""
    key = "storage.path"
    if os.path.isdir(path):
        return ConfigError(key, f"{path} is a directory", f"point it at a file inside it, e.g. {os.path.join(path, 'metrics.db')}")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return ConfigError(key, f"{path} is not readable and writable by this user",
                           "make the service user (metrics) own it, or choose another storage.path")
    directory = os.path.dirname(os.path.abspath(path))
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return ConfigError(key, f"{existing} is not a directory, so {directory} cannot be created",
                           "choose a storage.path under a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "" if existing == directory else f" (to create {directory})"
        by = "by this user"
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            by = "(a read-only file system)"
        return ConfigError(key, f"directory {existing} is not writable {by}{what}: the database, "
                                "its -wal and its lock file go there",
                           "make the service user (metrics) own it (the unit's StateDirectory= does), "
                           "or choose another storage.path")
    return None


def check_before_start(settings: Settings) -> ConfigError | None:
    """What `run` checks before taking the lock; the agent itself then reads the token
    and builds the collectors (ConfigError there is exit 2 too)."""
    return storage_problem(settings.storage.path)


def check_all(settings: Settings) -> Findings:
    """Everything `run` refuses (errors), and what it would run DEGRADED with (warnings)."""
    from belabox_metrics.agent import build_collectors
    from belabox_metrics.clock import SystemClock
    from belabox_metrics.collectors.base import CollectorContext
    from belabox_metrics.collectors.procfs import FsRoot
    from belabox_metrics.collectors.srt import SrtCollector
    from belabox_metrics.health.server import listen_problem, probe_listen
    from belabox_metrics.secrets import read_secret_file

    found = Findings()
    problem = check_before_start(settings)
    if problem is not None:
        found.errors.append(problem)
    if settings.remote.token_file:
        try:
            read_secret_file(settings.remote.token_file, "remote.token_file")
        except ConfigError as exc:
            found.errors.append(exc)
    ctx = CollectorContext(FsRoot(settings.host.proc_root, settings.host.sys_root), SystemClock(),
                           settings.device.id)
    try:
        collectors = build_collectors(settings, ctx)
    except ConfigError as exc:
        found.errors.append(exc)
        collectors = []
    now_ms = int(ctx.clock.wall() * 1000)
    for index, (metric, collector) in enumerate(collectors):
        try:
            # One reading of each local collector: what it would say on this machine. SRT
            # sources are servers that may not be up yet: `run` reports those in /health.
            if not isinstance(collector, SrtCollector):
                collector.collect(now_ms)
        except Exception as exc:  # a collector's failure is a finding, never a traceback
            found.warnings.append(f"metrics[{index}] ({metric.name}): {exc} -- the agent would run DEGRADED; "
                                  "fix it, set `mock: true` on a dev box, or remove the entry")
        finally:
            close = getattr(collector, "close", None)
            if callable(close):
                close()
    connection_checks(settings, found)
    if settings.health.listen:
        host, port = parse_listen(settings.health.listen)
        error = probe_listen(host, port)
        if error is not None:
            found.warnings.append(f"health.listen: {listen_problem(settings.health.listen, error)} -- the agent "
                                  "would collect and upload but serve no /health until it can bind; set a free "
                                  "HOST:PORT of this machine, or off")
    return found


def connection_checks(settings: Settings, found: Findings) -> None:
    """Read every configured TLS file into a context and say which proxy uploads take.
    remote.tls: an error (`run` refuses to start with it); a wss:// belaUI source's tls or an
    unusable proxy in the environment: a warning (the source, or each upload, would fail)."""
    from belabox_metrics import logs
    from belabox_metrics.httpclient import Target, choose_proxy
    from belabox_metrics.tlsconfig import TlsSettings, client_context

    remote = settings.remote
    checks: list[tuple[str, TlsSettings, bool]] = []
    if remote.enabled and remote.url.startswith("https:"):
        checks.append((logs.redact_url(remote.url), remote.tls, True))
    for metric in settings.metrics:
        for source in getattr(metric.options, "sources", None) or ():
            tls = getattr(source.options, "tls", None)
            url = str(getattr(source.options, "url", ""))
            if isinstance(tls, TlsSettings) and (url.startswith("wss:") or tls.configured):
                if not url.startswith("wss:"):
                    found.errors.append(ConfigError(tls.key, f"is set but the source's url is "
                                                             f"{url.split(':')[0]}://", "use a wss:// url, or remove tls"))
                    continue
                checks.append((logs.redact_url(url), tls, False))
    for where, tls, fatal in checks:
        try:
            client_context(tls)
        except ConfigError as exc:
            if fatal:
                found.errors.append(exc)
            else:
                found.warnings.append(f"{exc} -- the source would not connect")
            continue
        if tls.configured:
            parts = [f"CA {tls.ca_file}" if tls.ca_file else "system CAs"]
            if tls.cert_file:
                parts.append(f"client certificate {tls.cert_file}")
            if tls.server_name:
                parts.append(f"server name {tls.server_name}")
            found.notes.append(f"tls:     {where}: " + ", ".join(parts) + " (files read: OK)")
    if remote.enabled:
        target = Target.parse(remote.url)
        try:
            proxy = choose_proxy(target.scheme, target.netloc, remote.proxy)
        except ValueError as exc:
            found.warnings.append(f"the environment's proxy for {target.scheme}:// is unusable ({exc}) -- every "
                                  "upload would fail; fix HTTPS_PROXY / HTTP_PROXY, or set remote.proxy (or `none`)")
            return
        if proxy is not None:
            origin = "remote.proxy" if remote.proxy is not None else f"{target.scheme.upper()}_PROXY"
            found.notes.append(f"proxy:   {proxy.display} (from {origin})")
