"""`type: srtla-prom` (optional): Prometheus text from irlserver `srtla_rec`.

srtla_rec serves it when started with `--metrics_bind ADDR --metrics_port PORT`; the
per-connection series (`srtla_conn_packets_lost_total`, `srtla_conn_rtt_ms`, ... labelled
`group` and `remote`) only with `--metrics_detail`. Every `srtla_*` series is passed
through with its dots restored (`srtla.conn_packets_lost_total`) and millisecond gauges
turned into seconds (`srtla_conn_rtt_ms` -> `srtla.conn_rtt_seconds`), except:

- `remote` is new at every modem reconnect (a new socket; srtla_rec prints it as
  "::ffff:PORT", the IP lost): it is replaced by a stable `link="1"`, `"2"`, ... per
  group. A link keeps its number while it stays. A new connection takes the number of a
  link that is gone (the same IP first), else of a link srtla_rec still lists but that has
  been silent for `STALE_AFTER_S` (srtla_rec keeps a dead connection for 15 s, and the
  sender's new socket for the same modem shows up meanwhile); that silent connection is
  then no longer reported. Else the lowest free number.
- RTT, window, in-flight and the sender's bitrate come only from extended keepalives:
  for a link with `srtla_conn_extended_keepalives 0` they read 0 and are not stored
  (without that gauge: when RTT, window and in-flight are all 0).
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


# Gauges known only from extended keepalives: 0 for a link without them.
KEEPALIVE_GAUGES = ("srtla_conn_rtt_ms", "srtla_conn_window", "srtla_conn_in_flight",
                    "srtla_conn_sender_bitrate_bytes_per_second")
# Without srtla_conn_extended_keepalives, a link is taken as without them when these are all 0.
_ZERO_WITHOUT_KEEPALIVES = KEEPALIVE_GAUGES[:3]
EXTENDED_KEEPALIVES = "srtla_conn_extended_keepalives"
IDLE = "srtla_conn_idle_seconds"
# A listed connection silent this long is taken over by a new connection of the group.
# Senders send a keepalive every second on an idle link, so a live link reads 0 or 1.
STALE_AFTER_S = 5.0


def _ip(remote: str) -> str:
    return remote.rsplit(":", 1)[0]


@dataclass
class LinkNumbers:
    """A stable small number per bonded link of a group, in place of its `remote`."""

    slots: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> remote -> n
    gone: dict[str, dict[int, str]] = field(default_factory=dict)  # group -> n -> last IP
    retired: dict[str, set[str]] = field(default_factory=dict)  # group -> remotes taken over

    def assign(self, group: str, remotes: dict[str, float | None]) -> dict[str, int]:
        """remote -> seconds since its last packet (None: unknown) for every connection
        listed now -> the number of each reported one (a taken-over connection has none)."""
        current = self.slots.get(group, {})
        gone = self.gone.setdefault(group, {})
        retired = self.retired.setdefault(group, set())
        retired &= set(remotes)
        for remote, number in current.items():
            if remote not in remotes:
                gone[number] = _ip(remote)
        kept = {r: n for r, n in current.items() if r in remotes}
        used = set(kept.values())
        stale = {r for r in kept if (remotes[r] or 0.0) >= STALE_AFTER_S}
        for remote in sorted(set(remotes) - set(kept) - retired):
            ip = _ip(remote)
            same_ip = sorted(n for n, last in gone.items() if last == ip and n not in used)
            silent = sorted(stale, key=lambda r: (_ip(r) != ip, -(remotes[r] or 0.0), kept[r]))
            if same_ip:
                number = same_ip[0]
            elif silent:
                number = kept.pop(silent[0])
                stale.discard(silent[0])
                retired.add(silent[0])
                used.discard(number)
            else:
                number = next(n for n in range(1, len(used) + 2) if n not in used)
            kept[remote] = number
            used.add(number)
            gone.pop(number, None)
        self.slots[group] = kept
        return kept

    def forget_groups(self, keep: set[str]) -> None:
        for group in [g for g in self.slots if g not in keep]:
            del self.slots[group]
            self.gone.pop(group, None)
            self.retired.pop(group, None)


def srtla_samples(series: list[tuple[str, dict[str, str], float]], now_ms: int,
                  links: LinkNumbers | None = None) -> list[Sample]:
    links = links or LinkNumbers()
    remotes: dict[str, dict[str, float | None]] = {}  # group -> remote -> idle seconds
    extended: dict[tuple[str, str], float] = {}  # (group, remote) -> extended keepalives gauge
    zeros: dict[tuple[str, str], int] = {}  # (group, remote) -> RTT/window/in-flight at 0
    for name, labels, value in series:
        if "remote" not in labels:
            continue
        key = (labels.get("group", ""), labels["remote"])
        idle = remotes.setdefault(key[0], {})
        idle.setdefault(key[1], None)
        if name == IDLE:
            idle[key[1]] = value
        elif name == EXTENDED_KEEPALIVES:
            extended[key] = value
        elif name in _ZERO_WITHOUT_KEEPALIVES and value == 0:
            zeros[key] = zeros.get(key, 0) + 1
    numbers = {group: links.assign(group, found) for group, found in remotes.items()}
    links.forget_groups(set(remotes))

    def without_keepalives(key: tuple[str, str]) -> bool:
        if key in extended:
            return extended[key] == 0
        return zeros.get(key, 0) == len(_ZERO_WITHOUT_KEEPALIVES)

    out: list[Sample] = []
    for name, labels, value in series:
        if not name.startswith("srtla_") or not math.isfinite(value):
            continue
        labels = dict(labels)
        remote = labels.pop("remote", None)
        if remote is not None:
            group = labels.get("group", "")
            number = numbers[group].get(remote)
            if number is None:
                continue  # a dead connection whose link a new one has taken over
            if name in KEEPALIVE_GAUGES and without_keepalives((group, remote)):
                continue  # no extended keepalives from this sender: 0 is no measurement
            labels["link"] = str(number)
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
    description="Prometheus text metrics of irlserver srtla_rec",
))
