"""`metrics-collector status`: what an operator wants to see over SSH, on a phone.

The default is one short screen: health, backlog, last upload and last error, then what a
streamer reads (temperatures, the SRT link, modems, CPU). `--all` adds the last value of
every series, histograms as one line each (count, mean, p95). The running agent is asked
over its loopback health endpoint; the database (and the uploader's last error beside it)
is read directly, so the command also works while the agent is stopped.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from belabox_metrics.config import Settings
from belabox_metrics.logs import redact_url
from belabox_metrics.model import Labels
from belabox_metrics.naming import exact
from belabox_metrics.runtime import upload_record
from belabox_metrics.store.migrations import SchemaError
from belabox_metrics.store.queue import Row, SampleQueue
from belabox_metrics.timefmt import format_ms
from belabox_metrics.validation import ConfigError, parse_duration

HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")
MODEM_INTERFACES = re.compile(r"(usb|wwan|eth|enx|wlan)\d*.*")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{max(0.0, seconds):.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def _health(settings: Settings) -> dict[str, object] | None:
    if not settings.health.listen:
        return None
    try:
        with urllib.request.urlopen(f"http://{settings.health.listen}/health", timeout=2) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as error:
        return json.loads(error.read())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _sig(value: float, digits: int = 3) -> str:
    """A human figure: 46.8, 0.23, 4100, never 46.800000000001."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if abs(value) >= 10 ** digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _scaled(value: float, unit: str) -> str:
    """4100000 bit/s -> '4.1 Mbit/s'; 98211 B/s -> '98.2 kB/s'."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{_sig(value / factor)} {prefix}{unit}"
    return f"{_sig(value)} {unit}"


def _labels(labels: Labels) -> str:
    return ",".join(f"{k}={v}" for k, v in labels)


@dataclass
class Latest:
    """The newest sample of each series in the window, by name."""

    rows: Sequence[Row]

    def of(self, name: str) -> list[Row]:
        return [r for r in self.rows if r.sample.name == name]

    def value(self, name: str, **labels: str) -> float | None:
        for row in self.of(name):
            if all(row.sample.label(k) == v for k, v in labels.items()) and row.sample.value is not None:
                return row.sample.value
        return None

    def text(self, name: str, **labels: str) -> str | None:
        for row in self.of(name):
            if all(row.sample.label(k) == v for k, v in labels.items()) and row.sample.text is not None:
                return row.sample.text
        return None


# -- what a streamer reads ---------------------------------------------------------------------

def _temperatures(latest: Latest) -> list[str]:
    zones = [(r.sample.label("zone") or "?", r.sample.value) for r in latest.of("thermal.zone_celsius")
             if r.sample.value is not None]
    if not zones:
        zones = [(r.sample.label("zone") or r.sample.label("source") or "cpu", r.sample.value)
                 for r in latest.of("cpu.temperature") if r.sample.value is not None]
    soc = latest.value("belabox.soc_temperature_celsius")
    if soc is not None:
        zones.append(("belaUI", soc))
    if not zones:
        return []
    parts = [f"{zone.removesuffix('-thermal')} {value:.1f}" for zone, value in zones if value is not None]
    return ["temp     " + "  ".join(parts) + " °C"]


def _srt(latest: Latest) -> list[str]:
    lines = []
    live = latest.value("belabox.streaming_live")
    if live is not None:
        lines.append("stream   " + ("LIVE" if live > 0 else "not streaming") + " (belaUI)")
    links: dict[tuple[str, str], dict[str, float]] = {}
    wanted = {"srt.rtt_seconds": "rtt", "srt.packet_loss": "loss", "srt.send_rate_bits_per_second": "send",
              "srt.receive_rate_bits_per_second": "recv", "srt.packets_dropped_total": "dropped",
              "srt.buffer_seconds": "buf", "srt.stream_connected": "connected"}
    for row in latest.rows:
        key = wanted.get(row.sample.name)
        if key is None or row.sample.value is None:
            continue
        link = links.setdefault((row.sample.label("source") or "?", row.sample.label("stream") or ""), {})
        link[key] = link.get(key, 0.0) + row.sample.value if key == "dropped" else row.sample.value
    for (source, stream), figures in sorted(links.items()):
        parts = []
        if "connected" in figures:
            parts.append("connected" if figures["connected"] > 0 else "NOT CONNECTED")
        if "rtt" in figures:
            parts.append(f"rtt {_sig(figures['rtt'] * 1000, 2)} ms")
        if "loss" in figures:
            parts.append(f"loss {_sig(figures['loss'], 2)} %")
        for key in ("send", "recv"):
            if key in figures:
                parts.append(f"{key} {_scaled(figures[key], 'bit/s')}")
        if "dropped" in figures:
            parts.append(f"dropped {figures['dropped']:.0f}")
        if "buf" in figures:
            parts.append(f"buf {_sig(figures['buf'], 2)} s")
        name = f"{source} {stream}".strip()
        lines.append(f"SRT      {name}: " + ", ".join(parts))
    return lines


def _modems(latest: Latest) -> list[str]:
    lines = []
    throughput = [(r.sample.label("interface") or "?", r.sample.value)
                  for r in latest.of("belabox.modem_throughput_bytes_per_second") if r.sample.value is not None]
    if not throughput:
        throughput = [(r.sample.label("interface") or "?", r.sample.value)
                      for r in latest.of("network.transmit_bytes_per_second")
                      if r.sample.value is not None and MODEM_INTERFACES.fullmatch(r.sample.label("interface") or "")]
    if throughput:
        lines.append("uplinks  " + "  ".join(f"{name} {_scaled(v or 0.0, 'B/s')}" for name, v in throughput))
    for row in latest.of("belabox.modem_signal_percent"):
        modem = row.sample.label("modem") or "?"
        extra = " ".join(t for t in (latest.text("belabox.modem_network", modem=modem),
                                     latest.text("belabox.modem_technology", modem=modem),
                                     latest.text("belabox.modem_connection", modem=modem)) if t)
        roaming = latest.value("belabox.modem_roaming", modem=modem)
        lines.append(f"modem {modem}  signal {row.sample.value:.0f} % {extra}".rstrip()
                     + (" ROAMING" if roaming else ""))
    return lines


def _cpu(latest: Latest) -> list[str]:
    parts = []
    usage = latest.value("cpu.usage_percent", cpu="all")
    if usage is not None:
        parts.append(f"{usage:.0f} %")
    load = latest.value("system.load1")
    if load is not None:
        parts.append(f"load {load:.2f}")
    clusters = []
    for row in latest.of("cpu.frequency_hertz"):
        policy = row.sample.label("policy") or "?"
        top = latest.value("cpu.frequency_max_hertz", policy=policy)
        now = row.sample.value or 0.0
        shown = f"{now / 1e9:.2f}"
        if top is not None and now < top * 0.99:
            shown += f" (max {top / 1e9:.2f})"
        clusters.append(shown)
    if clusters:
        parts.append("freq " + " ".join(clusters) + " GHz")
    available, total = latest.value("memory.available_bytes"), latest.value("memory.total_bytes")
    lines = ["CPU      " + "  ".join(parts)] if parts else []
    if available is not None and total:
        lines.append(f"memory   {_scaled(available, 'B')} free of {_scaled(total, 'B')}")
    return lines


# -- every series ------------------------------------------------------------------------------

def histogram_lines(rows: Iterable[Row]) -> tuple[list[Row], list[tuple[str, Labels, str]]]:
    """Split rows into plain ones and histograms collapsed to (name, labels, summary)."""
    rows = list(rows)
    names = {r.sample.name for r in rows}
    bases = {n.removesuffix("_bucket") for n in names if n.endswith("_bucket")
             and n.removesuffix("_bucket") + "_count" in names}
    plain: list[Row] = []
    groups: dict[tuple[str, Labels], dict[str, object]] = {}
    for row in rows:
        name = row.sample.name
        base = next((name.removesuffix(p) for p in HISTOGRAM_PARTS
                     if name.endswith(p) and name.removesuffix(p) in bases), None)
        if base is None:
            plain.append(row)
            continue
        labels = tuple((k, v) for k, v in row.sample.labels if k != "le")
        group = groups.setdefault((base, labels), {"buckets": []})
        value = row.sample.value if row.sample.value is not None else 0.0
        if name.endswith("_bucket"):
            le = row.sample.label("le") or "+Inf"
            group["buckets"].append((math.inf if le == "+Inf" else float(le), value))  # type: ignore[attr-defined]
        else:
            group[name.removeprefix(base)] = value
    out = []
    for (base, labels), group in sorted(groups.items()):
        count = float(group.get("_count", 0.0))  # type: ignore[arg-type]
        total = float(group.get("_sum", 0.0))  # type: ignore[arg-type]
        buckets = sorted(group["buckets"])  # type: ignore[call-overload]
        summary = f"count {count:.0f}"
        if count:
            summary += f"  mean {_sig(total / count)}  p95 {quantile(0.95, buckets, count)}"
        out.append((base, labels, summary))
    return plain, out


def quantile(q: float, buckets: Sequence[tuple[float, float]], count: float) -> str:
    """As PromQL's histogram_quantile: linear within the bucket the rank falls in."""
    rank = q * count
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return f">{_sig(lower)}"
            inside = cumulative - below
            return _sig(lower + (bound - lower) * ((rank - below) / inside if inside else 1.0))
        lower, below = bound, cumulative
    return "?"


def _every_series(latest: Latest, now: float) -> list[str]:
    plain, histograms = histogram_lines(latest.rows)
    entries: list[tuple[str, Labels, str, str]] = []
    for row in plain:
        sample = row.sample
        value = exact(sample.value) if sample.value is not None else repr(sample.text)
        entries.append((sample.name, sample.labels, value, _ago(now - row.ts / 1000)))
    for base, labels, summary in histograms:
        entries.append((base, labels, summary, ""))
    entries.sort(key=lambda e: (e[0], e[1]))
    width = max((len(e[0]) for e in entries), default=10)
    values = min(24, max((len(e[2]) for e in entries), default=10))
    return [f"  {name:<{width}}  {value:<{values}}  {ago:>7}  {_labels(labels)}".rstrip()
            for name, labels, value, ago in entries]


# -- the command -------------------------------------------------------------------------------

def _last_error_on_disk(settings: Settings, now: float) -> str:
    record = upload_record.read(upload_record.path_for(settings.storage.path))
    if not record or not record.get("last_error"):
        return "none recorded"
    at = record.get("at_ms")
    text = f"{record['last_error']}"
    if isinstance(at, int):
        text += f" ({_ago(now - at / 1000)}"
        recovered = record.get("recovered_ms")
        text += f", then uploads worked again {_ago(now - recovered / 1000)})" if isinstance(recovered, int) else ")"
    return text


def _started_s(started: object) -> float | None:
    """The health document's ``started`` (RFC 3339, UTC) as Unix seconds."""
    if not isinstance(started, str):
        return None
    try:
        return datetime.datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def status(settings: Settings, window: str, show_all: bool = False) -> int:
    try:
        window_s = parse_duration(window, "--window")
    except ConfigError as exc:
        print(f"metrics-collector: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    destination = redact_url(settings.remote.url)
    doc = _health(settings)
    components: dict[str, object] = {}
    if doc is None:
        where = settings.health.listen or "health endpoint disabled"
        print(f"{settings.device.id}: agent not answering ({where}): stopped, starting, or health.listen is off")
    else:
        raw = doc.get("components", {})
        components = raw if isinstance(raw, dict) else {}
        print(f"{settings.device.id}: {str(doc.get('status')).upper()}   since {doc.get('started')}, "
              f"version {doc.get('version')}")
        for name in ("collectors", "uploader", "storage", "time"):
            part = components.get(name, {})
            if isinstance(part, dict) and part.get("status") != "ok":
                print(f"  {name} {part.get('status')}: {part.get('reason', '')}")

    if not os.path.exists(settings.storage.path):
        print(f"storage  no database yet at {settings.storage.path}")
        return 0 if doc is not None else 1
    try:
        queue = SampleQueue.open(settings.storage.path)
    except (SchemaError, sqlite3.Error) as exc:
        print(f"storage  cannot read {settings.storage.path}: {exc}")
        return 1
    try:
        stats = queue.stats(destination)
        latest = Latest(queue.latest_per_series(int((now - window_s) * 1000)))
        held = queue.held_count()
        acked_ms = queue.last_acknowledged_ms(destination)
    finally:
        queue.close()

    uploader = components.get("uploader")
    if not settings.remote.enabled:
        print("upload   disabled (remote.enabled: false)")
    elif isinstance(uploader, dict):
        in_flight = uploader.get("in_flight_seconds")
        print(f"upload   last success {uploader.get('last_success') or 'never'}"
              + (f"; request in flight {in_flight:.0f}s" if isinstance(in_flight, (int, float)) else ""))
        print(f"         last error: {uploader.get('last_error') or 'none'}")
    else:
        print("upload   last acknowledged " + (f"{_ago(now - acked_ms / 1000)} ({format_ms(acked_ms)})"
                                              if acked_ms is not None else "never"))
        print(f"         last error: {_last_error_on_disk(settings, now)}")
    collectors = components.get("collectors")
    if isinstance(collectors, dict):
        for name, state in (collectors.get("collectors") or {}).items():
            if isinstance(state, dict) and state.get("last_error"):
                print(f"  collector {name} failing: {state['last_error']}")
            for source in (state.get("sources") or []) if isinstance(state, dict) else []:
                if isinstance(source, dict) and source.get("status") == "failing":
                    print(f"  source {name}/{source.get('name')} ({source.get('target')}) failing "
                          f"{source.get('failing_polls')}x: {source.get('last_error')}")
    oldest = (f", oldest {_ago(now - stats.oldest_pending_ms / 1000)}" if stats.oldest_pending_ms is not None else "")
    print(f"backlog  {stats.pending} not yet uploaded to {destination}{oldest}")
    print(f"storage  {stats.db_bytes / 1e6:.1f} MB (+{stats.wal_bytes / 1e6:.1f} MB WAL), {stats.samples} samples, "
          f"{stats.series} series" + (f", {stats.dead_letters} dead letters" if stats.dead_letters else "")
          + (f", {held} held until the clock is trusted" if held else ""))
    written = doc.get("written_bytes") if doc is not None else None
    started = _started_s(doc.get("started")) if doc is not None else None
    if isinstance(written, int) and started is not None and now > started:
        rate = written / (now - started)
        print(f"flash    {written / 1e6:.1f} MB written by the agent since it started "
              f"({rate / 1e3:.2f} KB/s, ~{rate * 86400 / 1e6:.0f} MB a day)")

    glance = _temperatures(latest) + _srt(latest) + _modems(latest) + _cpu(latest)
    if glance:
        print(f"-- last {window} --")
        for line in glance:
            print(line)
    elif not latest.rows:
        print(f"no samples in the last {window}")
    if show_all:
        print(f"every series seen in the last {window} ({len(latest.rows)} stored rows):")
        for line in _every_series(latest, now):
            print(line)
        print(f"(as of {format_ms(int(now * 1000))})")
    else:
        print(f"(as of {format_ms(int(now * 1000))}; every series: status --all)")
    return 0 if doc is not None else 1
