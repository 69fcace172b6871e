"""Pieces every SRT/BELABOX source shares: errors, HTTP with a hard deadline, secret files,
loss arithmetic, counter accumulation and typed access to JSON payloads.

Sources never return made-up values: anything unexpected raises ``SourceError`` with a
reason an operator can act on, and the collector counts it.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import math
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from belabox_metrics import httpclient
from belabox_metrics.logs import register_secret
from belabox_metrics.model import Sample

MAX_HTTP_BODY = 4 * 1024 * 1024


class SourceError(Exception):
    """This source produced nothing this interval; the message says why (no secrets)."""


class Source(Protocol):
    """One configured source of the `srt` collector."""

    type: str
    timeout: float

    @property
    def display(self) -> str: ...

    def poll(self, now_ms: int) -> list[Sample]: ...

    def close(self) -> None: ...


# -- URLs and HTTP --------------------------------------------------------------------------

def redact_url(url: str) -> str:
    """scheme://host:port only: paths carry stream keys and player ids, never log them."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def http_get(url: str, timeout: float, *, authorization: str | None = None,
             max_bytes: int = MAX_HTTP_BODY) -> bytes:
    """GET ``url`` and return the body of a 200 answer, all within ``timeout`` seconds.

    The whole exchange has one deadline, so a server that trickles one byte a second cannot
    hold a poll for ever (urlopen's timeout applies to each socket operation).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceError(f"{redact_url(url)} is not an http(s) URL")
    headers = {"Accept": "application/json, text/plain", "User-Agent": "belabox-metrics"}
    if authorization:
        headers["Authorization"] = authorization
    try:
        # A local service on the encoder: no proxy from the environment.
        response = httpclient.request(url, "GET", headers, timeout=timeout, max_body=max_bytes)
    except httpclient.HttpError as exc:
        if exc.kind == "timeout":
            raise SourceError(f"no complete answer within {timeout:g}s") from None
        if exc.kind == "refused":
            raise SourceError("connection refused (server down or wrong port?)") from None
        if exc.kind == "too-large":
            raise SourceError(f"answer larger than {max_bytes} bytes") from None
        if exc.kind in ("bad-answer", "reset"):
            raise SourceError(f"bad HTTP answer ({exc})") from None
        raise SourceError(f"network error: {exc}") from None
    if response.status != 200:
        raise SourceError(http_status_reason(response.status, response.reason))
    return response.body


def http_status_reason(status: int, reason: str) -> str:
    hint = {
        401: "credentials missing or wrong: check credentials_file",
        403: "not allowed: give this user API read permission",
        404: "not found: check the URL path (and that the API is enabled)",
    }.get(status, "server error" if status >= 500 else "unexpected answer")
    return f"HTTP {status} {reason}".rstrip() + f" ({hint})"


# -- secret files ---------------------------------------------------------------------------

def check_secret_file(path: str) -> None:
    """Refuse a secret file that group or others can read (like ssh does with keys)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SourceError(f"secret file {path} does not exist") from None
    except OSError as exc:
        raise SourceError(f"secret file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise SourceError(f"secret file {path} is not a regular file")
    if mode & 0o077:
        raise SourceError(
            f"secret file {path} is readable or writable by group/others "
            f"(mode {stat.S_IMODE(mode):04o}); refusing to use it: run `chmod 600 {path}`"
        )


def read_secret_file(path: str) -> str:
    check_secret_file(path)
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"secret file {path} is unreadable ({type(exc).__name__})") from None
    if not value:
        raise SourceError(f"secret file {path} is empty")
    register_secret(value)  # masked on every surface from now on
    return value


def write_secret_file(path: str, value: str) -> None:
    """Write atomically with mode 0600 from the start (never briefly world-readable)."""
    register_secret(value)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def basic_authorization(credentials_file: str | None) -> str | None:
    """`user:password` on one line of a 0600 file -> an HTTP Basic header value."""
    if credentials_file is None:
        return None
    value = read_secret_file(credentials_file)
    if ":" not in value:
        raise SourceError(f"credentials file {credentials_file} must hold `user:password`")
    encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
    register_secret(value.partition(":")[2])
    register_secret(encoded)  # a server may echo the header it refused
    return "Basic " + encoded


# -- loss and counters ----------------------------------------------------------------------

def loss_percent(lost: float, delivered: float) -> float | None:
    """Loss over an interval: 100 × lost / (delivered + lost); None when nothing moved.

    ``delivered`` must count each original packet once: SRT's receiver counts
    (pktRecv) include the retransmissions that recovered the lost ones (pktRcvRetrans),
    so callers pass received − retransmitted (SRT's statistics.md: pktRcvLoss counts only
    original packets). No packets means no loss figure, never a fake 0 %.
    """
    total = delivered + lost
    if total <= 0 or lost < 0 or delivered < 0:
        return None
    return 100.0 * lost / total


@dataclass
class CumulativeDeltas:
    """Turns cumulative counters (per connection) into per-poll deltas.

    The first value seen for a connection that already existed at the first poll is a
    baseline (its history is not "this interval"); a connection first seen later counts
    from zero. A counter that goes backwards was reset (reconnect): its new value is the
    delta.
    """

    last: dict[tuple[str, str], float] = field(default_factory=dict)
    primed: bool = False

    def delta(self, conn: str, name: str, value: float) -> float:
        key = (conn, name)
        previous = self.last.get(key)
        self.last[key] = value
        if previous is None:
            return value if self.primed else 0.0
        if value < previous:
            return value
        return value - previous

    def finish_poll(self, live_conns: set[str]) -> None:
        self.primed = True
        for key in [k for k in self.last if k[0] not in live_conns]:
            del self.last[key]


@dataclass
class Totals:
    """Monotonic `_total` counters the agent owns, keyed by (metric, labels)."""

    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def add(self, name: str, labels: tuple[tuple[str, str], ...], delta: float) -> float:
        key = (name, labels)
        value = self.values.get(key, 0.0) + max(delta, 0.0)
        self.values[key] = value
        return value


# -- typed JSON access ----------------------------------------------------------------------

def obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SourceError(f"{where} is not a JSON object (payload shape changed?)")
    return value


def num(container: Mapping[str, Any], key: str, where: str) -> float:
    value = container.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if key not in container:
            raise SourceError(f"{where}.{key} is missing (payload shape changed?)")
        raise SourceError(f"{where}.{key} is not a number (payload shape changed?)")
    if not math.isfinite(value):
        raise SourceError(f"{where}.{key} is not finite")
    return float(value)


def opt_num(container: Mapping[str, Any], key: str, where: str) -> float | None:
    return num(container, key, where) if key in container else None


def parse_json(body: bytes, what: str) -> Any:
    import json

    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        # The message never includes the body: it may carry keys or tokens.
        raise SourceError(f"{what} is not valid JSON") from None


# -- metric names (dotted; the VictoriaMetrics uploader turns dots into underscores) --------
# Base units throughout, as Prometheus recommends: seconds, bits per second, bytes.

LOSS = "srt.packet_loss"
PACKETS_SENT_TOTAL = "srt.packets_sent_total"
PACKETS_RECEIVED_TOTAL = "srt.packets_received_total"
PACKETS_LOST_TOTAL = "srt.packets_lost_total"
PACKETS_RETRANSMITTED_TOTAL = "srt.packets_retransmitted_total"
PACKETS_DROPPED_TOTAL = "srt.packets_dropped_total"
RTT_SECONDS = "srt.rtt_seconds"
SEND_RATE = "srt.send_rate_bits_per_second"
RECEIVE_RATE = "srt.receive_rate_bits_per_second"
BUFFER_SECONDS = "srt.buffer_seconds"
LINK_BANDWIDTH = "srt.link_bandwidth_bits_per_second"
STREAM_BITRATE = "srt.stream_bitrate_bits_per_second"
STREAM_CONNECTED = "srt.stream_connected"
UPTIME_SECONDS = "srt.uptime_seconds"
LATENCY_SECONDS = "srt.latency_seconds"

SEND = "send"
RECEIVE = "receive"


@dataclass
class DirectionDeltas:
    """Packet counts that moved in one direction during one poll."""

    packets: float = 0.0
    lost: float = 0.0
    retransmitted: float = 0.0
    dropped: float = 0.0

    def add(self, other: DirectionDeltas) -> None:
        self.packets += other.packets
        self.lost += other.lost
        self.retransmitted += other.retransmitted
        self.dropped += other.dropped


def counter_samples(totals: Totals, labels: tuple[tuple[str, str], ...], direction: str,
                    deltas: DirectionDeltas, now_ms: int, *, with_loss: bool = True) -> list[Sample]:
    """The `_total` counters of one direction, plus loss percent over this poll."""
    from belabox_metrics.model import make_labels

    dir_labels = make_labels(dict(labels), direction=direction)
    packets_metric = PACKETS_SENT_TOTAL if direction == SEND else PACKETS_RECEIVED_TOTAL
    out = [
        Sample(packets_metric, totals.add(packets_metric, dir_labels, deltas.packets), now_ms,
               dir_labels),
        Sample(PACKETS_LOST_TOTAL, totals.add(PACKETS_LOST_TOTAL, dir_labels, deltas.lost),
               now_ms, dir_labels),
        Sample(PACKETS_RETRANSMITTED_TOTAL,
               totals.add(PACKETS_RETRANSMITTED_TOTAL, dir_labels, deltas.retransmitted),
               now_ms, dir_labels),
        Sample(PACKETS_DROPPED_TOTAL,
               totals.add(PACKETS_DROPPED_TOTAL, dir_labels, deltas.dropped), now_ms, dir_labels),
    ]
    if with_loss:
        # lost / original packets: packets counts retransmissions too; on the sender the
        # lost ones are among the originals sent, on the receiver they never arrived
        originals = deltas.packets - deltas.retransmitted
        delivered = originals - deltas.lost if direction == SEND else originals
        loss = loss_percent(deltas.lost, max(delivered, 0.0))
        if loss is not None:
            out.append(Sample(LOSS, loss, now_ms, dir_labels))
    return out


@dataclass(frozen=True)
class SourceBuildContext:
    """What a source needs from the agent: a logger and where its config entry is."""

    key: str
    log: Any
    timeout: float = 2.0


class SourceParser(Protocol):
    def __call__(self, reader: Any) -> Any: ...


class SourceBuilder(Protocol):
    def __call__(self, options: Any, ctx: SourceBuildContext) -> Source: ...


@dataclass(frozen=True)
class SourceType:
    name: str
    parse: SourceParser
    build: SourceBuilder
    description: str


# The module that defines each source type, imported when a config first names the type:
# an agent pays only for the types it polls (issue 16: the five modules and the websocket
# client are ~0.6 MB of RSS an agent without those sources never uses). A test checks this
# table against what the modules register.
SOURCE_MODULES: dict[str, str] = {
    "belaui": "belaui",
    "mediamtx": "mediamtx",
    "openirl": "sls",
    "sls": "sls",
    "srt-live-transmit": "srt_live_transmit",
    "srtla-prom": "srtla_prom",
}


class SourceTypes(Mapping[str, SourceType]):
    """Every source type by name; a type's module is imported on first access."""

    def __init__(self) -> None:
        self.registered: dict[str, SourceType] = {}

    def __getitem__(self, name: str) -> SourceType:
        if name not in self.registered and name in SOURCE_MODULES:
            importlib.import_module(f"{__package__}.{SOURCE_MODULES[name]}")
        return self.registered[name]

    def __contains__(self, name: object) -> bool:
        return name in SOURCE_MODULES or name in self.registered

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*SOURCE_MODULES, *self.registered]))

    def __len__(self) -> int:
        return len(set(SOURCE_MODULES) | set(self.registered))


SOURCE_TYPES = SourceTypes()


def register_source(source_type: SourceType) -> SourceType:
    SOURCE_TYPES.registered[source_type.name] = source_type
    return source_type


# -- HTTP source options --------------------------------------------------------------------

@dataclass(frozen=True)
class HttpOptions:
    url: str
    credentials_file: str | None = None


def parse_http_options(reader: Any, example: str) -> HttpOptions:
    url = reader.string("url", example=example)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        reader.fail("url", f"{redact_url(url)}... is not an http:// or https:// URL",
                    f"write e.g. `url: {example}`")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        reader.fail("url", "the URL has an invalid port", "use a port from 1 to 65535")
    if parts.username or parts.password:
        reader.fail("url", "credentials in the URL would end up in logs and process listings",
                    "remove user:password@ and put `user:password` in a 0600 file named by "
                    "`credentials_file:`")
    return HttpOptions(url=url, credentials_file=reader.string(
        "credentials_file", None, example="/etc/belabox-metrics/server-credentials"))


def fetch_json(options: HttpOptions, url: str, timeout: float) -> Any:
    authorization = basic_authorization(options.credentials_file)
    return parse_json(http_get(url, timeout, authorization=authorization), "the answer")
