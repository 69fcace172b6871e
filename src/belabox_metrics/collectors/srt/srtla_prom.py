"""`type: srtla-prom` (optional): Prometheus text from irlserver `srtla_rec` / `srtla_send`.

Those forks serve metrics when started with `--metrics_bind ADDR --metrics_port PORT`;
per-link series (`srtla_conn_packets_lost_total`, `srtla_conn_rtt_ms`, ... with `group` and
`remote="IP:port"` labels) only in their detailed mode. Every `srtla_*` series is passed
through with its dots restored (`srtla.conn_packets_lost_total`) and millisecond gauges
turned into seconds (`srtla_conn_rtt_ms` -> `srtla.conn_rtt_seconds`), except:

- `remote="IP:port"` changes at every modem reconnect (a new socket, often a new IP): it
  is replaced by a stable `link="1"`, `"2"`, ... per group, a vanished link's number going
  to the next new link (the same IP first), so a reconnect continues the series;
- RTT, window and in-flight are all 0 for a link whose sender does not send extended
  keepalives: they are not measurements and are not stored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

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


# Gauges known only from extended keepalives: all 0 for a link without them.
KEEPALIVE_GAUGES = ("srtla_conn_rtt_ms", "srtla_conn_window", "srtla_conn_in_flight")


@dataclass
class LinkNumbers:
    """A stable small number per bonded link of a group, in place of its IP:port: a link
    keeps its number while it stays; a new link takes the number of a link gone from the
    same IP, else the lowest free one."""

    slots: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> remote -> n
    gone: dict[str, dict[int, str]] = field(default_factory=dict)  # group -> n -> last IP

    def assign(self, group: str, remotes: set[str]) -> dict[str, int]:
        current = self.slots.get(group, {})
        gone = self.gone.setdefault(group, {})
        for remote, number in current.items():
            if remote not in remotes:
                gone[number] = remote.rsplit(":", 1)[0]
        kept = {r: n for r, n in current.items() if r in remotes}
        used = set(kept.values())
        for remote in sorted(remotes - set(kept)):
            ip = remote.rsplit(":", 1)[0]
            same_ip = sorted(n for n, last in gone.items() if last == ip and n not in used)
            number = same_ip[0] if same_ip else next(n for n in range(1, len(used) + 2) if n not in used)
            kept[remote] = number
            used.add(number)
            gone.pop(number, None)
        self.slots[group] = kept
        return kept

    def forget_groups(self, keep: set[str]) -> None:
        for group in [g for g in self.slots if g not in keep]:
            del self.slots[group]
            self.gone.pop(group, None)


def srtla_samples(series: list[tuple[str, dict[str, str], float]], now_ms: int,
                  links: LinkNumbers | None = None) -> list[Sample]:
    links = links or LinkNumbers()
    remotes: dict[str, set[str]] = {}
    idle: dict[tuple[str, str], int] = {}  # (group, remote) -> keepalive gauges at 0
    for name, labels, value in series:
        if "remote" in labels:
            remotes.setdefault(labels.get("group", ""), set()).add(labels["remote"])
            if name in KEEPALIVE_GAUGES and value == 0:
                key = (labels.get("group", ""), labels["remote"])
                idle[key] = idle.get(key, 0) + 1
    numbers = {group: links.assign(group, found) for group, found in remotes.items()}
    links.forget_groups(set(remotes))
    out: list[Sample] = []
    for name, labels, value in series:
        if not name.startswith("srtla_") or not math.isfinite(value):
            continue
        labels = dict(labels)
        remote = labels.pop("remote", None)
        if remote is not None:
            group = labels.get("group", "")
            if name in KEEPALIVE_GAUGES and idle.get((group, remote), 0) == len(KEEPALIVE_GAUGES):
                continue  # no extended keepalives from this sender: 0 is no measurement
            labels["link"] = str(numbers[group][remote])
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
    links: LinkNumbers = field(default_factory=LinkNumbers)

    @property
    def display(self) -> str:
        return f"{TYPE} {redact_url(self.options.http.url)}"

    def poll(self, now_ms: int) -> list[Sample]:
        body = http_get(self.options.http.url, self.timeout,
                        authorization=basic_authorization(self.options.http.credentials_file))
        samples = srtla_samples(parse_prometheus_text(body.decode("utf-8", "replace")), now_ms,
                                self.links)
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
