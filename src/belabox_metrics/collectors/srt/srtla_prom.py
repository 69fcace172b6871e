"""`type: srtla-prom` (optional): Prometheus text from irlserver `srtla_rec` / `srtla_send`.

Those forks expose per-link metrics (`srtla_conn_packets_lost_total`, `srtla_conn_rtt_ms`,
... with `group` and `remote` labels). Every `srtla_*` series is passed through with its
dots restored (`srtla.conn_packets_lost_total`) and millisecond gauges turned into seconds
(`srtla_conn_rtt_ms` -> `srtla.conn_rtt_seconds`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from belabox_metrics.collectors.srt.common import (
    HttpOptions,
    SourceBuildContext,
    SourceError,
    SourceType,
    basic_authorization,
    http_get,
    parse_http_options,
    redact_url,
    register_source,
)
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.validation import Reader

TYPE = "srtla-prom"
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(?:\s+\d+)?\s*$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus_text(body: str) -> list[tuple[str, dict[str, str], float]]:
    """Exposition-format lines -> (name, labels, value); comments and blanks skipped."""
    out: list[tuple[str, dict[str, str], float]] = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise SourceError("a metrics line is not in Prometheus text format")
        name, raw_labels, raw_value = match.groups()
        try:
            value = float(raw_value)
        except ValueError:
            raise SourceError(f"{name} has a non-numeric value") from None
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\")
                  for k, v in _LABEL.findall(raw_labels or "")}
        out.append((name, labels, value))
    return out


def srtla_samples(series: list[tuple[str, dict[str, str], float]], now_ms: int) -> list[Sample]:
    out: list[Sample] = []
    for name, labels, value in series:
        if not name.startswith("srtla_") or not math.isfinite(value):
            continue
        metric = "srtla." + name[len("srtla_"):]
        if metric.endswith("_ms"):
            metric, value = metric[:-3] + "_seconds", value / 1000.0
        out.append(Sample(metric, value, now_ms, make_labels(labels, source=TYPE)))
    return out


@dataclass(frozen=True)
class Options:
    http: HttpOptions


def parse(reader: Reader) -> Options:
    return Options(http=parse_http_options(reader, "http://server:9100/metrics"))


@dataclass
class SrtlaPromSource:
    options: Options
    timeout: float = 2.0
    type: str = TYPE

    @property
    def display(self) -> str:
        return f"{TYPE} {redact_url(self.options.http.url)}"

    def poll(self, now_ms: int) -> list[Sample]:
        body = http_get(self.options.http.url, self.timeout,
                        authorization=basic_authorization(self.options.http.credentials_file))
        samples = srtla_samples(parse_prometheus_text(body.decode("utf-8", "replace")), now_ms)
        if not samples:
            raise SourceError("no srtla_* metrics in the answer (wrong endpoint?)")
        return samples

    def close(self) -> None:
        pass


def build(options: Options, ctx: SourceBuildContext) -> SrtlaPromSource:
    return SrtlaPromSource(options, timeout=ctx.timeout)


SOURCE = register_source(SourceType(
    name=TYPE, parse=parse, build=build,
    description="Prometheus text metrics of irlserver srtla_rec / srtla_send",
))
