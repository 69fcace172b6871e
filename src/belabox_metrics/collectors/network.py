"""`network`: bytes, packets, errors and drops per interface, received and transmitted, as
counters plus byte rates, from /proc/net/dev.

The BELABOX uplinks are USB modems (``usb*``, ``wwan*``, ``eth*``, ``enx*``), Wi-Fi and
Ethernet: none of them is excluded by default. The default exclusion is only what carries
no uplink traffic: ``lo``, ``docker*``, ``veth*``, ``br-*``, ``wlan*mon``, ``virbr*``.
``include``/``exclude`` regexes (whole name) change that.

A modem that re-enumerates is deleted and re-created with a new ifindex and counters from
zero. A changed ifindex (/sys/class/net/<if>/ifindex) or a decrease is a reset: the delta
is the new value (never negative) and ``network.counter_resets_total{interface}`` counts
it. At most ``max_interfaces`` (default 32) are reported; interfaces already reported keep
their place, and each cycle adds the number left out to ``network.interfaces_dropped_total``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from belabox_metrics.collectors.base import (
    CollectorContext,
    CollectorError,
    CollectorSpec,
    MetricSettings,
    register,
)
from belabox_metrics.collectors.host_counters import (
    LabelCache,
    NameFilter,
    counter_deltas,
    elapsed_seconds,
    import_psutil,
    per_second,
)
from belabox_metrics.collectors.procfs import FsRoot, KernelFile
from belabox_metrics.model import Sample
from belabox_metrics.validation import Reader

_new_tuple = tuple.__new__

DEFAULT_EXCLUDE = r"lo|docker.*|veth.*|br-.*|wlan.*mon|virbr.*"
DEFAULT_MAX_INTERFACES = 32
# Interfaces remembered beyond the cap (re-enumerated modems come and go); the least recently
# seen are forgotten past it, which bounds memory.
MAX_REMEMBERED = 256

COUNTERS = (
    "network.receive_bytes_total", "network.receive_packets_total",
    "network.receive_errors_total", "network.receive_drops_total",
    "network.transmit_bytes_total", "network.transmit_packets_total",
    "network.transmit_errors_total", "network.transmit_drops_total",
)
RECEIVE_RATE = "network.receive_bytes_per_second"
TRANSMIT_RATE = "network.transmit_bytes_per_second"
RESETS = "network.counter_resets_total"
DROPPED = "network.interfaces_dropped_total"


class NetCounters(NamedTuple):
    name: str
    receive_bytes: int
    receive_packets: int
    receive_errors: int
    receive_drops: int
    transmit_bytes: int
    transmit_packets: int
    transmit_errors: int
    transmit_drops: int


def parse_net_dev(text: str, wanted: Callable[[str], bool] | None = None) -> list[NetCounters]:
    """/proc/net/dev -> counters per interface (only those ``wanted`` accepts, when given),
    in the file's order."""
    out: list[NetCounters] = []
    for line in text.splitlines():
        # "  eth0: 123 ..." but also "eth0:123..." when a counter fills the column.
        name, colon, rest = line.partition(":")
        if not colon or "|" in name:
            continue
        name = name.strip()
        if wanted is not None and not wanted(name):
            continue
        f = rest.split()
        if len(f) < 16:
            continue
        out.append(NetCounters(name, int(f[0]), int(f[1]), int(f[2]), int(f[3]),
                               int(f[8]), int(f[9]), int(f[10]), int(f[11])))
    return out


@dataclass(frozen=True)
class Options:
    include: str | None = None
    exclude: str | None = DEFAULT_EXCLUDE
    max_interfaces: int = DEFAULT_MAX_INTERFACES


def parse_options(reader: Reader) -> Options:
    # `exclude: ""` excludes nothing (the default list is replaced, not extended).
    exclude = reader.string("exclude", DEFAULT_EXCLUDE, nonempty=False, example="lo|docker.*")
    if exclude and exclude is not DEFAULT_EXCLUDE:
        exclude = reader.regex("exclude")
    return Options(
        include=reader.regex("include", None),
        exclude=exclude or None,
        max_interfaces=reader.integer("max_interfaces", DEFAULT_MAX_INTERFACES,
                                      minimum=1, maximum=1024),
    )


class SysfsIfindex:
    """/sys/class/net/<if>/ifindex, kept open per interface."""

    def __init__(self, fs: FsRoot) -> None:
        self.fs = fs
        self._files: dict[str, KernelFile] = {}

    def __call__(self, name: str) -> int | None:
        handle = self._files.get(name)
        if handle is None:
            handle = self._files[name] = self.fs.open_sys("class", "net", name, "ifindex")
        try:
            return int(handle.read())
        except (OSError, ValueError):
            return None

    def forget(self, name: str) -> None:
        handle = self._files.pop(name, None)
        if handle is not None:
            handle.close()


class SocketIfindex:
    """macOS: the standard library asks the kernel."""

    def __call__(self, name: str) -> int | None:
        import socket

        try:
            return socket.if_nametoindex(name)
        except OSError:
            return None

    def forget(self, name: str) -> None:
        pass


def psutil_net_counters() -> list[NetCounters]:
    psutil = import_psutil()

    counters = psutil.net_io_counters(pernic=True) or {}
    return [
        NetCounters(name, c.bytes_recv, c.packets_recv, c.errin, c.dropin,
                    c.bytes_sent, c.packets_sent, c.errout, c.dropout)
        for name, c in counters.items()
    ]


class _Interface:
    __slots__ = ("ifindex", "labels", "resets", "seen", "values")

    def __init__(self, labels: tuple[tuple[str, str], ...]) -> None:
        self.labels = labels
        self.values: tuple[int, ...] = ()
        self.ifindex: int | None = None
        self.resets = 0
        self.seen = -1  # the cycle it was last reported in


class NetworkCollector:
    def __init__(self, settings: MetricSettings, ctx: CollectorContext,
                 counters: Callable[[], list[NetCounters]] | None = None,
                 ifindex: SysfsIfindex | SocketIfindex | None = None) -> None:
        self.ctx = ctx
        self.options: Options = settings.options or Options()
        self.filter = NameFilter(self.options.include, self.options.exclude)
        darwin = sys.platform == "darwin"
        if counters is None:
            if darwin:
                counters = psutil_net_counters
            else:
                net_dev = ctx.fs.open_proc("net", "dev", sequential=True)
                counters = lambda: parse_net_dev(net_dev.read(), self.filter)  # noqa: E731
        self.counters = counters
        self.ifindex = ifindex or (SocketIfindex() if darwin else SysfsIfindex(ctx.fs))
        self._interfaces: dict[str, _Interface] = {}
        self._reported: list[str] = []
        self._cycle = 0
        self._previous_at: float | None = None
        self.dropped = 0
        self._labels = LabelCache("interface")

    def _choose(self, names: list[str]) -> list[str]:
        """Interfaces reported this cycle: last cycle's that are still here keep their place,
        then new ones in the kernel's order, up to the cap."""
        present = set(names)
        chosen = [n for n in self._reported if n in present]
        cap = self.options.max_interfaces
        if len(chosen) < len(names):
            kept = set(chosen)
            for name in names:
                if len(chosen) >= cap:
                    break
                if name not in kept:
                    chosen.append(name)
        self.dropped += len(names) - len(chosen)
        for name in self._reported:
            if name not in present:
                self.ifindex.forget(name)
        return chosen

    def collect(self, now_ms: int) -> list[Sample]:
        try:
            found = [c for c in self.counters() if self.filter(c.name)]
        except (OSError, ValueError) as exc:
            raise CollectorError(f"cannot read interface counters: {exc}") from exc
        now = self.ctx.clock.monotonic()
        elapsed = elapsed_seconds(self._previous_at, now)
        by_name = {c.name: c for c in found}
        chosen = self._choose(list(by_name))
        cycle = self._cycle = self._cycle + 1
        samples: list[Sample] = []
        append, extend = samples.append, samples.extend
        interfaces = self._interfaces
        # Samples built with tuple.__new__ (Sample's own __new__ is Python code filling the
        # defaults): at hundreds of interfaces this loop builds thousands a cycle.
        new = _new_tuple
        for name in chosen:
            counters = by_name[name]
            state = interfaces.get(name)
            if state is None:
                state = interfaces[name] = _Interface(self._labels(name))
            labels = state.labels
            values = counters[1:]
            ifindex = self.ifindex(name)
            extend([new(Sample, (metric, float(value), now_ms, labels, None))
                    for metric, value in zip(COUNTERS, values, strict=True)])
            if state.values:
                deltas, reset = counter_deltas(state.values, values)
                if not reset and ifindex is not None and state.ifindex is not None \
                        and ifindex != state.ifindex:
                    deltas, reset = list(values), True
                if reset:
                    state.resets += 1
                # A rate needs the previous cycle; an interface back after an absence
                # only gets its reset counted.
                if elapsed is not None and state.seen == cycle - 1:
                    append(new(Sample, (RECEIVE_RATE, per_second(deltas[0], elapsed), now_ms, labels, None)))
                    append(new(Sample, (TRANSMIT_RATE, per_second(deltas[4], elapsed), now_ms, labels, None)))
            append(new(Sample, (RESETS, float(state.resets), now_ms, labels, None)))
            state.values = values
            state.ifindex = ifindex
            state.seen = cycle
        self._reported = chosen
        self._previous_at = now
        # Keep everything that can be reported plus MAX_REMEMBERED more: trimming to a fixed
        # 256 would forget reported interfaces when max_interfaces is larger, losing their rates.
        remembered = self.options.max_interfaces + MAX_REMEMBERED
        if len(interfaces) > remembered:
            for name in sorted(interfaces, key=lambda n: interfaces[n].seen)[:-remembered]:
                del interfaces[name]
        append(Sample(DROPPED, float(self.dropped), now_ms))
        return samples


SPEC = register(CollectorSpec(
    name="network",
    factory=NetworkCollector,
    description="Per-interface bytes, packets, errors and drops (counters) and byte rates; "
                "modems (usb*, wwan*) included by default",
    default_interval=5.0,
    parse_options=parse_options,
))
