"""`type: srt-live-transmit`: libsrt's tool writing JSON statistics (`-statspf:json`).

One JSON object per line, to a `-statsout` file or mixed into stdout with log lines (only
lines starting with ``{`` are records). Counters are per report unless srt-live-transmit
ran with ``-f`` (cumulative). The agent reads what was appended since its last poll and
accumulates its own monotonic `_total` counters from it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from belabox_metrics.collectors.srt.common import (
    BUFFER_SECONDS,
    LINK_BANDWIDTH,
    RECEIVE,
    RECEIVE_RATE,
    RTT_SECONDS,
    SEND,
    SEND_RATE,
    CumulativeDeltas,
    DirectionDeltas,
    SourceBuildContext,
    SourceError,
    SourceType,
    Totals,
    counter_samples,
    num,
    obj,
    register_source,
)
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.validation import Reader

TYPE = "srt-live-transmit"
COUNTER_FORMS = ("interval", "cumulative")
# Bounded work per poll: at ~750 bytes a record this is over a thousand records.
MAX_READ_BYTES = 1024 * 1024
# On the first poll only the tail is read, for a baseline: history is not "this interval".
FIRST_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class DirectionStats:
    packets: float
    lost: float
    retransmitted: float
    dropped: float
    mbit_rate: float
    ms_buf: float

    def deltas(self) -> DirectionDeltas:
        return DirectionDeltas(self.packets, self.lost, self.retransmitted, self.dropped)


@dataclass(frozen=True)
class StatsRecord:
    sid: str
    rtt_ms: float
    bandwidth_mbps: float
    send: DirectionStats
    recv: DirectionStats


def _direction(record: Any, name: str) -> DirectionStats:
    part = obj(record.get(name), name)
    return DirectionStats(
        packets=num(part, "packets", name),
        lost=num(part, "packetsLost", name),
        retransmitted=num(part, "packetsRetransmitted", name),
        dropped=num(part, "packetsDropped", name),
        mbit_rate=num(part, "mbitRate", name),
        ms_buf=num(part, "msBuf", name),
    )


def parse_stats_line(line: str) -> StatsRecord | None:
    """One line of srt-live-transmit output -> a record; None for log lines.

    Raises SourceError for a JSON line that is not a stats record of the known shape.
    """
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        raise SourceError("a stats line is not valid JSON (truncated write or not -statspf:json?)") from None
    record = obj(data, "record")
    link = obj(record.get("link"), "link")
    return StatsRecord(
        sid=str(record.get("sid", "")),
        rtt_ms=num(link, "rtt", "link"),
        bandwidth_mbps=num(link, "bandwidth", "link"),
        send=_direction(record, "send"),
        recv=_direction(record, "recv"),
    )


def parse_stats_lines(lines: Iterable[str]) -> tuple[list[StatsRecord], list[str]]:
    """Records in order, and the reasons of lines that looked like records but were not."""
    records: list[StatsRecord] = []
    problems: list[str] = []
    for line in lines:
        try:
            record = parse_stats_line(line)
        except SourceError as exc:
            problems.append(str(exc))
            continue
        if record is not None:
            records.append(record)
    return records, problems


class StatsTail:
    """Reads complete lines appended to a stats file (or a FIFO) since the last call.

    A file that shrank or was replaced (srt-live-transmit restarted and truncated it) is
    read again from its start. A partial last line waits for its newline.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.inode: tuple[int, int] | None = None
        self.offset = 0
        self.partial = b""
        self.fifo_fd: int | None = None
        self.mtime = 0.0

    def read_lines(self) -> list[str]:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            if self.inode is None:
                self.inode = (-1, -1)  # appears later: all of it is new
            raise SourceError(f"stats file {self.path} does not exist "
                              "(is srt-live-transmit running with -statsout?)") from None
        except OSError as exc:
            raise SourceError(f"stats file {self.path}: {exc.strerror}") from None
        self.mtime = info.st_mtime
        data = self._read_fifo() if stat.S_ISFIFO(info.st_mode) else self._read_file(info)
        data = self.partial + data
        complete, _, self.partial = data.rpartition(b"\n")
        if len(self.partial) > MAX_READ_BYTES:
            self.partial = b""
        if not complete:
            return []
        return complete.decode("utf-8", "replace").split("\n")

    def _read_file(self, info: os.stat_result) -> bytes:
        identity = (info.st_dev, info.st_ino)
        resync = False
        if identity != self.inode or info.st_size < self.offset:
            replaced = self.inode is not None
            self.inode = identity
            self.partial = b""
            # A file replaced while we watch is all new; at start only its tail is read.
            self.offset = 0 if replaced else max(0, info.st_size - FIRST_READ_BYTES)
            resync = self.offset > 0
        if info.st_size <= self.offset:
            return b""
        start = max(self.offset, info.st_size - MAX_READ_BYTES)
        if start > self.offset:
            resync = True
            self.partial = b""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(start)
                data = handle.read(info.st_size - start)
        except OSError as exc:
            raise SourceError(f"stats file {self.path}: {exc.strerror}") from None
        self.offset = start + len(data)
        if resync:
            # Started mid-file: the first line is probably cut.
            cut = data.find(b"\n")
            data = data[cut + 1:] if cut >= 0 else b""
        return data

    def _read_fifo(self) -> bytes:
        if self.fifo_fd is None:
            try:
                self.fifo_fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as exc:
                raise SourceError(f"stats pipe {self.path}: {exc.strerror}") from None
        chunks: list[bytes] = []
        size = 0
        while size < MAX_READ_BYTES:
            try:
                chunk = os.read(self.fifo_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self.fifo_fd is not None:
            os.close(self.fifo_fd)
            self.fifo_fd = None


@dataclass(frozen=True)
class Options:
    stats_file: str
    counters: str = "interval"
    stale_after: float = 10.0
    stream: str | None = None


def parse(reader: Reader) -> Options:
    return Options(
        stats_file=reader.string("stats_file", example="/run/belabox/srt-stats.json"),
        counters=reader.string("counters", "interval", choices=COUNTER_FORMS),
        stale_after=reader.duration("stale_after", 10.0, minimum=0.5, maximum=3600),
        stream=reader.string("stream", None, example="live"),
    )


@dataclass
class SrtLiveTransmitSource:
    options: Options
    timeout: float = 2.0
    type: str = TYPE
    tail: StatsTail = field(init=False)
    deltas: CumulativeDeltas = field(default_factory=CumulativeDeltas)
    totals: Totals = field(default_factory=Totals)
    active: set[str] = field(default_factory=set)
    latest: StatsRecord | None = None
    last_record_s: float | None = None
    started: bool = False

    def __post_init__(self) -> None:
        self.tail = StatsTail(self.options.stats_file)
        stream = self.options.stream or os.path.basename(self.options.stats_file)
        self.labels = make_labels(source=TYPE, stream=stream)

    @property
    def display(self) -> str:
        return f"{TYPE} {self.options.stats_file}"

    def poll(self, now_ms: int) -> list[Sample]:
        first = not self.started
        self.started = True
        try:
            lines = self.tail.read_lines()
        except SourceError:
            # Nothing readable at start: whatever appears later is new, not history.
            self.deltas.primed = True
            raise
        records, problems = parse_stats_lines(lines)
        now_s = now_ms / 1000.0
        if first:
            # History before the agent started is a baseline (counted from here on), but what
            # the latest record says is reported at once when it is recent: an agent restarted
            # in the middle of a stream knows the stream is live from its first poll.
            self._account(records, count=False)
            if records:
                self.latest = records[-1]
                self.last_record_s = self.tail.mtime
            if self.last_record_s is None or now_s - self.last_record_s > self.options.stale_after:
                return []
            return self._samples({SEND: DirectionDeltas(), RECEIVE: DirectionDeltas()}, now_ms, fresh=True)
        if problems and not records:
            raise SourceError(problems[-1])
        if records:
            self.last_record_s = now_s
            self.latest = records[-1]
        if self.last_record_s is None or now_s - self.last_record_s > self.options.stale_after:
            age = "ever" if self.last_record_s is None else f"{now_s - self.last_record_s:.0f}s"
            raise SourceError(f"no new stats record for {age} (stale after "
                              f"{self.options.stale_after:g}s; srt-live-transmit not running "
                              "or not passing packets?)")
        moved = self._account(records, count=True)
        return self._samples(moved, now_ms, fresh=bool(records))

    def _account(self, records: list[StatsRecord], *, count: bool) -> dict[str, DirectionDeltas]:
        moved = {SEND: DirectionDeltas(), RECEIVE: DirectionDeltas()}
        cumulative = self.options.counters == "cumulative"
        for record in records:
            for direction, stats in ((SEND, record.send), (RECEIVE, record.recv)):
                if cumulative:
                    conn = f"{record.sid}/{direction}"
                    d = DirectionDeltas(
                        self.deltas.delta(conn, "packets", stats.packets),
                        self.deltas.delta(conn, "lost", stats.lost),
                        self.deltas.delta(conn, "retransmitted", stats.retransmitted),
                        self.deltas.delta(conn, "dropped", stats.dropped),
                    )
                else:
                    d = stats.deltas()
                if stats.packets > 0:
                    self.active.add(direction)
                moved[direction].add(d)
        if cumulative:
            self.deltas.primed = True
        if not count:
            moved = {SEND: DirectionDeltas(), RECEIVE: DirectionDeltas()}
        return moved

    def _samples(self, moved: dict[str, DirectionDeltas], now_ms: int, fresh: bool = True) -> list[Sample]:
        out: list[Sample] = []
        for direction in (SEND, RECEIVE):
            if direction in self.active:
                out += counter_samples(self.totals, self.labels, direction, moved[direction],
                                       now_ms)
        latest = self.latest
        if latest is None:
            return out
        out.append(Sample(RTT_SECONDS, latest.rtt_ms / 1000.0, now_ms, self.labels))
        out.append(Sample(LINK_BANDWIDTH, latest.bandwidth_mbps * 1e6, now_ms, self.labels))
        # Rates only from a record that arrived in this poll: srt-live-transmit writes nothing
        # once packets stop, and repeating the last rate would keep the stream "live" (and the
        # uplink budget low) until the file goes stale. No record, no rate: never a fake zero.
        if SEND in self.active:
            send_labels = make_labels(dict(self.labels), direction=SEND)
            if fresh:
                out.append(Sample(SEND_RATE, latest.send.mbit_rate * 1e6, now_ms, self.labels))
            out.append(Sample(BUFFER_SECONDS, latest.send.ms_buf / 1000.0, now_ms, send_labels))
        if RECEIVE in self.active:
            recv_labels = make_labels(dict(self.labels), direction=RECEIVE)
            if fresh:
                out.append(Sample(RECEIVE_RATE, latest.recv.mbit_rate * 1e6, now_ms, self.labels))
            out.append(Sample(BUFFER_SECONDS, latest.recv.ms_buf / 1000.0, now_ms, recv_labels))
        return out

    def close(self) -> None:
        self.tail.close()


def build(options: Options, ctx: SourceBuildContext) -> SrtLiveTransmitSource:
    return SrtLiveTransmitSource(options, timeout=ctx.timeout)


SOURCE = register_source(SourceType(
    name=TYPE, parse=parse, build=build,
    description="srt-live-transmit -statspf:json statistics from a -statsout file or pipe",
))
