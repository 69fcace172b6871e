"""`type: sls` and `type: openirl`: the SRT Live Server statistics APIs the IRL tools poll.

Classic SLS `GET :8181/stats`:
``{"publishers":{"<streamid>":{"bitrate","bytesRcvDrop","bytesRcvLoss","mbpsBandwidth",
"mbpsRecvRate","msRcvBuf","pktRcvDrop","pktRcvLoss","rtt","uptime"}},"status":"ok"}``
(no packets-received count, so no loss percent: lost and dropped counters only).

OpenIRL srt-live-server `GET /stats/{player_id}`:
``{"publisher":{"bitrate","buffer","dropped_pkts","rtt","uptime","latency"},"status":"ok"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from belabox_metrics.collectors.srt.common import (
    BUFFER_SECONDS,
    LATENCY_SECONDS,
    LINK_BANDWIDTH,
    PACKETS_DROPPED_TOTAL,
    PACKETS_LOST_TOTAL,
    RECEIVE,
    RECEIVE_RATE,
    RTT_SECONDS,
    STREAM_BITRATE,
    STREAM_CONNECTED,
    UPTIME_SECONDS,
    CumulativeDeltas,
    HttpOptions,
    SourceBuildContext,
    SourceError,
    SourceType,
    Totals,
    fetch_json,
    num,
    obj,
    opt_num,
    parse_http_options,
    redact_url,
    register_source,
)
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.validation import Reader

SLS = "sls"
OPENIRL = "openirl"
COUNTER_FORMS = ("cumulative", "interval")


@dataclass(frozen=True)
class SlsPublisher:
    stream_id: str
    rtt_ms: float
    recv_rate_mbps: float
    bandwidth_mbps: float
    bitrate_kbps: float
    buffer_ms: float
    lost: float
    dropped: float
    uptime_s: float | None


def stream_matches(stream_id: str, wanted: str) -> bool:
    """`publish/live/feed1` matches `feed1`, `live/feed1` and itself."""
    return stream_id == wanted or stream_id.endswith("/" + wanted)


def _check_status(payload: Mapping[str, Any]) -> None:
    status = payload.get("status")
    if status != "ok":
        shown = status if isinstance(status, str) and len(status) < 40 else type(status).__name__
        raise SourceError(f"server status is {shown!r}, not 'ok'")


def parse_sls_stats(payload: Any) -> list[SlsPublisher]:
    """Classic SLS /stats -> publishers. Raises SourceError when the shape is not that."""
    data = obj(payload, "answer")
    _check_status(data)
    if "publishers" not in data:
        raise SourceError("answer.publishers is missing (payload shape changed?)")
    publishers = data.get("publishers") or {}
    out: list[SlsPublisher] = []
    for stream_id, raw in obj(publishers, "publishers").items():
        where = "publishers[…]"
        pub = obj(raw, where)
        out.append(SlsPublisher(
            stream_id=str(stream_id),
            rtt_ms=num(pub, "rtt", where),
            recv_rate_mbps=num(pub, "mbpsRecvRate", where),
            bandwidth_mbps=num(pub, "mbpsBandwidth", where),
            bitrate_kbps=num(pub, "bitrate", where),
            buffer_ms=num(pub, "msRcvBuf", where),
            lost=num(pub, "pktRcvLoss", where),
            dropped=num(pub, "pktRcvDrop", where),
            uptime_s=opt_num(pub, "uptime", where),
        ))
    return out


@dataclass(frozen=True)
class OpenIrlPublisher:
    bitrate_kbps: float
    buffer_ms: float
    dropped: float
    rtt_ms: float
    uptime_s: float | None
    latency_ms: float | None


def parse_openirl_stats(payload: Any) -> OpenIrlPublisher | None:
    """OpenIRL /stats/{player_id} -> the publisher, or None when nobody publishes."""
    data = obj(payload, "answer")
    _check_status(data)
    raw = data.get("publisher")
    if raw is None:
        return None
    pub = obj(raw, "publisher")
    return OpenIrlPublisher(
        bitrate_kbps=num(pub, "bitrate", "publisher"),
        buffer_ms=num(pub, "buffer", "publisher"),
        dropped=num(pub, "dropped_pkts", "publisher"),
        rtt_ms=num(pub, "rtt", "publisher"),
        uptime_s=opt_num(pub, "uptime", "publisher"),
        latency_ms=opt_num(pub, "latency", "publisher"),
    )


@dataclass(frozen=True)
class SlsOptions:
    http: HttpOptions
    stream: str | None = None
    counters: str = "cumulative"


def parse_sls(reader: Reader) -> SlsOptions:
    return SlsOptions(
        http=parse_http_options(reader, "http://server:8181/stats"),
        stream=reader.string("stream", None, example="live"),
        counters=reader.string("counters", "cumulative", choices=COUNTER_FORMS),
    )


@dataclass
class SlsSource:
    options: SlsOptions
    timeout: float = 2.0
    type: str = SLS
    deltas: CumulativeDeltas = field(default_factory=CumulativeDeltas)
    totals: Totals = field(default_factory=Totals)

    @property
    def display(self) -> str:
        return f"{SLS} {redact_url(self.options.http.url)}"

    def poll(self, now_ms: int) -> list[Sample]:
        payload = fetch_json(self.options.http, self.options.http.url, self.timeout)
        publishers = parse_sls_stats(payload)
        wanted = self.options.stream
        if wanted is not None:
            publishers = [p for p in publishers if stream_matches(p.stream_id, wanted)]
        out: list[Sample] = []
        for pub in publishers:
            out += self._publisher_samples(pub, wanted or pub.stream_id, now_ms)
        self.deltas.finish_poll({p.stream_id for p in publishers})
        if wanted is not None:
            labels = make_labels(source=SLS, stream=wanted)
            out.append(Sample(STREAM_CONNECTED, 1.0 if publishers else 0.0, now_ms, labels))
        return out

    def _publisher_samples(self, pub: SlsPublisher, stream: str, now_ms: int) -> list[Sample]:
        labels = make_labels(source=SLS, stream=stream)
        dir_labels = make_labels(source=SLS, stream=stream, direction=RECEIVE)
        if self.options.counters == "cumulative":
            lost = self.deltas.delta(pub.stream_id, "lost", pub.lost)
            dropped = self.deltas.delta(pub.stream_id, "dropped", pub.dropped)
        else:
            lost, dropped = pub.lost, pub.dropped
        out = [
            Sample(PACKETS_LOST_TOTAL, self.totals.add(PACKETS_LOST_TOTAL, dir_labels, lost),
                   now_ms, dir_labels),
            Sample(PACKETS_DROPPED_TOTAL,
                   self.totals.add(PACKETS_DROPPED_TOTAL, dir_labels, dropped), now_ms, dir_labels),
            Sample(RTT_SECONDS, pub.rtt_ms / 1000.0, now_ms, labels),
            Sample(RECEIVE_RATE, pub.recv_rate_mbps * 1e6, now_ms, labels),
            Sample(LINK_BANDWIDTH, pub.bandwidth_mbps * 1e6, now_ms, labels),
            Sample(STREAM_BITRATE, pub.bitrate_kbps * 1000.0, now_ms, labels),
            Sample(BUFFER_SECONDS, pub.buffer_ms / 1000.0, now_ms, dir_labels),
        ]
        if pub.uptime_s is not None:
            out.append(Sample(UPTIME_SECONDS, pub.uptime_s, now_ms, labels))
        return out

    def close(self) -> None:
        pass


def build_sls(options: SlsOptions, ctx: SourceBuildContext) -> SlsSource:
    return SlsSource(options, timeout=ctx.timeout)


@dataclass(frozen=True)
class OpenIrlOptions:
    http: HttpOptions
    stream: str = "publisher"


def parse_openirl(reader: Reader) -> OpenIrlOptions:
    return OpenIrlOptions(
        http=parse_http_options(reader, "http://server:8080/stats/PLAYER_ID"),
        stream=reader.string("stream", "publisher", example="live"),
    )


@dataclass
class OpenIrlSource:
    options: OpenIrlOptions
    timeout: float = 2.0
    type: str = OPENIRL
    deltas: CumulativeDeltas = field(default_factory=CumulativeDeltas)
    totals: Totals = field(default_factory=Totals)

    @property
    def display(self) -> str:
        return f"{OPENIRL} {redact_url(self.options.http.url)}"

    def poll(self, now_ms: int) -> list[Sample]:
        payload = fetch_json(self.options.http, self.options.http.url, self.timeout)
        pub = parse_openirl_stats(payload)
        labels = make_labels(source=OPENIRL, stream=self.options.stream)
        if pub is None:
            self.deltas.finish_poll(set())
            return [Sample(STREAM_CONNECTED, 0.0, now_ms, labels)]
        dir_labels = make_labels(dict(labels), direction=RECEIVE)
        dropped = self.deltas.delta("publisher", "dropped", pub.dropped)
        self.deltas.finish_poll({"publisher"})
        out = [
            Sample(STREAM_CONNECTED, 1.0, now_ms, labels),
            Sample(PACKETS_DROPPED_TOTAL,
                   self.totals.add(PACKETS_DROPPED_TOTAL, dir_labels, dropped), now_ms, dir_labels),
            Sample(RTT_SECONDS, pub.rtt_ms / 1000.0, now_ms, labels),
            Sample(STREAM_BITRATE, pub.bitrate_kbps * 1000.0, now_ms, labels),
            Sample(BUFFER_SECONDS, pub.buffer_ms / 1000.0, now_ms, dir_labels),
        ]
        if pub.uptime_s is not None:
            out.append(Sample(UPTIME_SECONDS, pub.uptime_s, now_ms, labels))
        if pub.latency_ms is not None:
            out.append(Sample(LATENCY_SECONDS, pub.latency_ms / 1000.0, now_ms, labels))
        return out

    def close(self) -> None:
        pass


def build_openirl(options: OpenIrlOptions, ctx: SourceBuildContext) -> OpenIrlSource:
    return OpenIrlSource(options, timeout=ctx.timeout)


SLS_SOURCE = register_source(SourceType(
    name=SLS, parse=parse_sls, build=build_sls,
    description="SRT Live Server (classic) GET /stats",
))
OPENIRL_SOURCE = register_source(SourceType(
    name=OPENIRL, parse=parse_openirl, build=build_openirl,
    description="OpenIRL srt-live-server GET /stats/{player_id}",
))
