"""`type: sls` and `type: openirl`: the SRT Live Server statistics APIs the IRL tools poll.

Classic SLS `GET :8181/stats` (and OpenIRL's `GET /stats/{player_id}?legacy=1`, whose one
publisher is always keyed `live`):
``{"publishers":{"<stream id>":{"bitrate","bytesRcvDrop","bytesRcvLoss","mbpsBandwidth",
"mbpsRecvRate","msRcvBuf","pktRcvDrop","pktRcvLoss","rtt","uptime"[,"pktRcvRetrans",…]}},
"status":"ok"}`` (no packets-received count, so no loss percent: lost, dropped and
retransmitted counters). The maintained classic SLS, irlserver/irl-srt-server, answers
``/stats`` only with ``?publisher=<full stream id>`` (the `publisher:` option) or with one
of its `api_keys` as the raw ``Authorization`` header value (the `api_key_file:` option);
it keys publishers by the full stream id the encoder published, e.g. ``publish/live/feed1``.

OpenIRL srt-live-server `GET /stats/{player_id}`:
``{"publisher":{"bitrate","buffer","dropped_pkts","rtt","uptime","latency"},"status":"ok"}``.

Counters are cumulative per publisher connection; a new connection is told by the server's
`uptime` going down (or a counter going down), and counts from zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from belabox_metrics.collectors.srt.common import (
    BUFFER_SECONDS,
    LATENCY_SECONDS,
    LINK_BANDWIDTH,
    PACKETS_DROPPED_TOTAL,
    PACKETS_LOST_TOTAL,
    PACKETS_RETRANSMITTED_TOTAL,
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
    basic_authorization,
    http_get,
    num,
    obj,
    opt_num,
    parse_http_options,
    parse_json,
    read_secret_file,
    redact_url,
    register_source,
)
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.validation import Reader

SLS = "sls"
OPENIRL = "openirl"
COUNTER_FORMS = ("cumulative", "interval")
RECONNECTS_TOTAL = "srt.reconnects_total"
HINT_401 = ("the server wants an API key: put one of its `api_keys` in a 0600 file named by "
            "`api_key_file:` (sent as the raw Authorization header; Basic credentials never "
            "match), or ask for one stream with `publisher: <full stream id>`, which "
            "irl-srt-server answers without a key")


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
    retransmitted: float | None = None


def stream_matches(stream_id: str, wanted: str) -> bool:
    """The server's stream id, or its trailing path: `publish/live/feed1` matches itself,
    `live/feed1` and `feed1`, never its app part `live`."""
    return stream_id == wanted or stream_id.endswith("/" + wanted)


def misnamed(stream_ids: list[str], wanted: str) -> bool:
    """`wanted` is a leading part of a server's stream id (`live` of `publish/live/feed1`):
    the configuration names the app, not the stream, and would report a false offline."""
    return any(wanted in sid.split("/")[:-1] or sid.startswith(wanted.rstrip("/") + "/")
               for sid in stream_ids if not stream_matches(sid, wanted))


def _check_status(payload: Mapping[str, Any]) -> None:
    status = payload.get("status")
    if status != "ok":
        shown = status if isinstance(status, str) and len(status) < 40 else type(status).__name__
        message = payload.get("message")
        said = f" ({message[:80]!r})" if isinstance(message, str) and message else ""
        hint = ""
        if isinstance(message, str) and "player key" in message.lower():
            hint = ": check the player id at the end of the URL (/stats/PLAYER_ID)"
        raise SourceError(f"server status is {shown!r}, not 'ok'{said}{hint}")


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
            retransmitted=opt_num(pub, "pktRcvRetrans", where),
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
    publisher: str | None = None
    api_key_file: str | None = None


def parse_sls(reader: Reader) -> SlsOptions:
    http = parse_http_options(reader, "http://server:8181/stats")
    publisher = reader.string("publisher", None, example="publish/live/feed1")
    in_url = parse_qs(urlsplit(http.url).query).get("publisher")
    if publisher is not None and in_url:
        reader.fail("publisher", "the URL has a ?publisher= query as well",
                    "keep one: remove ?publisher=… from `url:` and keep `publisher:`")
    api_key_file = reader.string("api_key_file", None, example="/etc/belabox-metrics/sls-api-key")
    if api_key_file is not None and http.credentials_file is not None:
        reader.fail("api_key_file", "is set together with credentials_file",
                    "SLS takes its API key raw in the Authorization header, not Basic "
                    "credentials: keep `api_key_file:` and remove `credentials_file:`")
    publisher = publisher or (in_url[0] if in_url else None)
    if publisher is not None and len([p for p in publisher.split("/") if p]) < 3:
        reader.fail("publisher" if not in_url else "url",
                    f"{publisher!r} is not a full stream id",
                    "write the whole id the encoder publishes, e.g. `publisher: publish/live/feed1`: "
                    "irl-srt-server answers a part of it (`live`, `feed1`) with an empty list, "
                    "which would read as offline while the stream is live")
    return SlsOptions(
        http=http,
        stream=reader.string("stream", publisher, example="publish/live/feed1"),
        counters=reader.string("counters", "cumulative", choices=COUNTER_FORMS),
        publisher=publisher,
        api_key_file=api_key_file,
    )


def stats_url(options: SlsOptions) -> str:
    """The configured URL, with ?publisher=<id> appended when `publisher:` asks for it."""
    parts = urlsplit(options.http.url)
    if options.publisher is None or "publisher" in parse_qs(parts.query):
        return options.http.url
    query = (parts.query + "&" if parts.query else "") + "publisher=" + quote(options.publisher, safe="/")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def fetch_stats(options: HttpOptions, url: str, timeout: float, api_key_file: str | None) -> Any:
    """GET the stats JSON with a raw API key (SLS) or Basic credentials; a 401 says how to fix it."""
    if api_key_file is not None:
        authorization: str | None = read_secret_file(api_key_file)  # registered: masked everywhere
    else:
        authorization = basic_authorization(options.credentials_file)
    try:
        body = http_get(url, timeout, authorization=authorization)
    except SourceError as exc:
        text = str(exc)
        if text.startswith("HTTP 401"):
            raise SourceError(text.split(" (", 1)[0] + f" ({HINT_401})") from None
        raise
    return parse_json(body, "the answer")


@dataclass
class Connections:
    """Tells a publisher's new connection by the server's uptime going down, and counts
    reconnects (a new connection after one the agent saw, or after the stream was gone)."""

    generation: dict[str, int] = field(default_factory=dict)
    uptime: dict[str, float] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    present: set[str] = field(default_factory=set)

    def key(self, stream: str, uptime_s: float | None) -> tuple[str, bool]:
        """(connection key for the counters, whether this is a reconnect)."""
        reconnect = False
        previous = self.uptime.get(stream)
        if stream in self.seen and stream not in self.present:
            reconnect = True  # gone for a poll (or more) and back
        elif previous is not None and uptime_s is not None and uptime_s < previous:
            reconnect = True  # a new connection between two polls
        if reconnect:
            self.generation[stream] = self.generation.get(stream, 0) + 1
        if uptime_s is not None:
            self.uptime[stream] = uptime_s
        self.seen.add(stream)
        return f"{stream}#{self.generation.get(stream, 0)}", reconnect

    def finish(self, present: set[str]) -> None:
        self.present = present
        for gone in [s for s in self.uptime if s not in present]:
            del self.uptime[gone]


@dataclass
class SlsSource:
    options: SlsOptions
    timeout: float = 2.0
    type: str = SLS
    deltas: CumulativeDeltas = field(default_factory=CumulativeDeltas)
    totals: Totals = field(default_factory=Totals)
    connections: Connections = field(default_factory=Connections)

    @property
    def display(self) -> str:
        return f"{SLS} {redact_url(self.options.http.url)}"

    def poll(self, now_ms: int) -> list[Sample]:
        payload = fetch_stats(self.options.http, stats_url(self.options), self.timeout,
                              self.options.api_key_file)
        everyone = parse_sls_stats(payload)
        wanted = self.options.stream
        publishers = everyone
        if wanted is not None:
            publishers = [p for p in everyone if stream_matches(p.stream_id, wanted)]
            if not publishers and misnamed([p.stream_id for p in everyone], wanted):
                raise SourceError(
                    f"stream {wanted!r} is only part of the stream id the server reports "
                    "(e.g. the app `live` of `publish/live/feed1`): set `stream:` (or "
                    "`publisher:`) to the full stream id the encoder publishes")
        out: list[Sample] = []
        live: set[str] = set()
        for pub in publishers:
            stream = wanted or pub.stream_id
            conn, reconnect = self.connections.key(pub.stream_id, pub.uptime_s)
            live.add(conn)
            out += self._publisher_samples(pub, conn, stream, reconnect, now_ms)
        self.deltas.finish_poll(live)
        self.connections.finish({p.stream_id for p in publishers})
        if wanted is not None:
            labels = make_labels(source=SLS, stream=wanted)
            out.append(Sample(STREAM_CONNECTED, 1.0 if publishers else 0.0, now_ms, labels))
        return out

    def _publisher_samples(self, pub: SlsPublisher, conn: str, stream: str, reconnect: bool,
                           now_ms: int) -> list[Sample]:
        labels = make_labels(source=SLS, stream=stream)
        dir_labels = make_labels(source=SLS, stream=stream, direction=RECEIVE)
        retransmitted = pub.retransmitted
        if self.options.counters == "cumulative":
            lost = self.deltas.delta(conn, "lost", pub.lost)
            dropped = self.deltas.delta(conn, "dropped", pub.dropped)
            if retransmitted is not None:
                retransmitted = self.deltas.delta(conn, "retransmitted", retransmitted)
        else:
            lost, dropped = pub.lost, pub.dropped
        out = [
            Sample(PACKETS_LOST_TOTAL, self.totals.add(PACKETS_LOST_TOTAL, dir_labels, lost),
                   now_ms, dir_labels),
            Sample(PACKETS_DROPPED_TOTAL,
                   self.totals.add(PACKETS_DROPPED_TOTAL, dir_labels, dropped), now_ms, dir_labels),
            Sample(RECONNECTS_TOTAL, self.totals.add(RECONNECTS_TOTAL, labels, 1.0 if reconnect else 0.0),
                   now_ms, labels),
            Sample(RTT_SECONDS, pub.rtt_ms / 1000.0, now_ms, labels),
            Sample(RECEIVE_RATE, pub.recv_rate_mbps * 1e6, now_ms, labels),
            Sample(LINK_BANDWIDTH, pub.bandwidth_mbps * 1e6, now_ms, labels),
            Sample(STREAM_BITRATE, pub.bitrate_kbps * 1000.0, now_ms, labels),
            Sample(BUFFER_SECONDS, pub.buffer_ms / 1000.0, now_ms, dir_labels),
        ]
        if retransmitted is not None:
            out.append(Sample(PACKETS_RETRANSMITTED_TOTAL,
                              self.totals.add(PACKETS_RETRANSMITTED_TOTAL, dir_labels, retransmitted),
                              now_ms, dir_labels))
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
    connections: Connections = field(default_factory=Connections)

    @property
    def display(self) -> str:
        return f"{OPENIRL} {redact_url(self.options.http.url)}"

    def poll(self, now_ms: int) -> list[Sample]:
        payload = fetch_stats(self.options.http, self.options.http.url, self.timeout, None)
        pub = parse_openirl_stats(payload)
        labels = make_labels(source=OPENIRL, stream=self.options.stream)
        if pub is None:
            self.deltas.finish_poll(set())
            self.connections.finish(set())
            return [Sample(STREAM_CONNECTED, 0.0, now_ms, labels)]
        dir_labels = make_labels(dict(labels), direction=RECEIVE)
        conn, reconnect = self.connections.key("publisher", pub.uptime_s)
        dropped = self.deltas.delta(conn, "dropped", pub.dropped)
        self.deltas.finish_poll({conn})
        self.connections.finish({"publisher"})
        out = [
            Sample(STREAM_CONNECTED, 1.0, now_ms, labels),
            Sample(PACKETS_DROPPED_TOTAL,
                   self.totals.add(PACKETS_DROPPED_TOTAL, dir_labels, dropped), now_ms, dir_labels),
            Sample(RECONNECTS_TOTAL, self.totals.add(RECONNECTS_TOTAL, labels, 1.0 if reconnect else 0.0),
                   now_ms, labels),
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
    description="SRT Live Server (classic, irl-srt-server) GET /stats[?publisher=ID]",
))
OPENIRL_SOURCE = register_source(SourceType(
    name=OPENIRL, parse=parse_openirl, build=build_openirl,
    description="OpenIRL srt-live-server GET /stats/{player_id}",
))
