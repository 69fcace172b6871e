"""`type: mediamtx`: MediaMTX's control API, `GET /v3/srtconns/list`.

Field names from bluenviron/mediamtx `internal/defs/api_srt.go`. Counters are cumulative
per connection (`id`); a reconnect is a new id whose counters start from zero, so the
agent's `_total` counters sum deltas over connections and stay monotonic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from belabox_metrics.collectors.srt.common import (
    BUFFER_SECONDS,
    LINK_BANDWIDTH,
    RECEIVE,
    RECEIVE_RATE,
    RTT_SECONDS,
    STREAM_CONNECTED,
    CumulativeDeltas,
    DirectionDeltas,
    HttpOptions,
    SourceBuildContext,
    SourceError,
    SourceType,
    Totals,
    counter_samples,
    fetch_json,
    num,
    obj,
    parse_http_options,
    redact_url,
    register_source,
)
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.validation import Reader

TYPE = "mediamtx"
LIST_PATH = "/v3/srtconns/list"
# SRT counters the agent needs; MediaMTX before 1.6 lists connections without them
SRT_FIELDS = ("packetsReceived", "packetsReceivedLoss", "packetsReceivedRetrans",
              "packetsReceivedDrop")


@dataclass(frozen=True)
class SrtConn:
    id: str
    path: str
    state: str
    packets_received: float
    lost: float
    retransmitted: float
    dropped: float
    rtt_ms: float
    receive_rate_mbps: float
    receive_buf_ms: float
    link_capacity_mbps: float


def parse_srtconns(payload: Any) -> list[SrtConn]:
    data = obj(payload, "answer")
    items = data.get("items")
    if not isinstance(items, list):
        raise SourceError("answer.items is missing or not a list (payload shape changed?)")
    out: list[SrtConn] = []
    for raw in items:
        where = "items[…]"
        item = obj(raw, where)
        missing = [k for k in SRT_FIELDS if k not in item]
        if missing:
            raise SourceError(
                f"{where} has no {', '.join(missing)}: MediaMTX before 1.6 does not report SRT "
                "packet counters in /v3/srtconns/list; upgrade MediaMTX to 1.6 or later")
        out.append(SrtConn(
            id=str(item.get("id", "")),
            path=str(item.get("path", "")),
            state=str(item.get("state", "")),
            packets_received=num(item, "packetsReceived", where),
            lost=num(item, "packetsReceivedLoss", where),
            retransmitted=num(item, "packetsReceivedRetrans", where),
            dropped=num(item, "packetsReceivedDrop", where),
            rtt_ms=num(item, "msRTT", where),
            receive_rate_mbps=num(item, "mbpsReceiveRate", where),
            receive_buf_ms=num(item, "msReceiveBuf", where),
            link_capacity_mbps=num(item, "mbpsLinkCapacity", where),
        ))
    return out


def list_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(LIST_PATH) else base + LIST_PATH


@dataclass(frozen=True)
class Options:
    http: HttpOptions
    path: str | None = None


def parse(reader: Reader) -> Options:
    return Options(
        http=parse_http_options(reader, "http://server:9997"),
        path=reader.string("path", None, example="live"),
    )


@dataclass
class MediaMtxSource:
    options: Options
    timeout: float = 2.0
    type: str = TYPE
    deltas: CumulativeDeltas = field(default_factory=CumulativeDeltas)
    totals: Totals = field(default_factory=Totals)

    @property
    def display(self) -> str:
        return f"{TYPE} {redact_url(self.options.http.url)}"

    def poll(self, now_ms: int) -> list[Sample]:
        payload = fetch_json(self.options.http, list_url(self.options.http.url), self.timeout)
        conns = [c for c in parse_srtconns(payload) if c.state == "publish"]
        if self.options.path is not None:
            conns = [c for c in conns if c.path == self.options.path]
        by_path: dict[str, list[SrtConn]] = {}
        for conn in conns:
            by_path.setdefault(conn.path, []).append(conn)
        out: list[Sample] = []
        for path, group in sorted(by_path.items()):
            labels = make_labels(source=TYPE, stream=path)
            moved = DirectionDeltas()
            for conn in group:
                moved.add(DirectionDeltas(
                    self.deltas.delta(conn.id, "packets", conn.packets_received),
                    self.deltas.delta(conn.id, "lost", conn.lost),
                    self.deltas.delta(conn.id, "retransmitted", conn.retransmitted),
                    self.deltas.delta(conn.id, "dropped", conn.dropped),
                ))
            out += counter_samples(self.totals, labels, RECEIVE, moved, now_ms)
            latest = group[-1]
            out += [
                Sample(RTT_SECONDS, latest.rtt_ms / 1000.0, now_ms, labels),
                Sample(RECEIVE_RATE, latest.receive_rate_mbps * 1e6, now_ms, labels),
                Sample(LINK_BANDWIDTH, latest.link_capacity_mbps * 1e6, now_ms, labels),
                Sample(BUFFER_SECONDS, latest.receive_buf_ms / 1000.0, now_ms,
                       make_labels(dict(labels), direction=RECEIVE)),
            ]
        self.deltas.finish_poll({c.id for c in conns})
        if self.options.path is not None:
            out.append(Sample(STREAM_CONNECTED, 1.0 if conns else 0.0, now_ms,
                              make_labels(source=TYPE, stream=self.options.path)))
        return out

    def close(self) -> None:
        pass


def build(options: Options, ctx: SourceBuildContext) -> MediaMtxSource:
    return MediaMtxSource(options, timeout=ctx.timeout)


SOURCE = register_source(SourceType(
    name=TYPE, parse=parse, build=build,
    description="MediaMTX control API GET /v3/srtconns/list",
))
