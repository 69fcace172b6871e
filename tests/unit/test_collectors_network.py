"""network: /proc/net/dev parsing, default filter that keeps the modems, cap, resets."""

from __future__ import annotations

from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.collectors.base import CollectorContext, MetricSettings
from belabox_metrics.collectors.host_counters import NameFilter, counter_deltas
from belabox_metrics.collectors.network import (
    DEFAULT_EXCLUDE,
    NetworkCollector,
    Options,
    parse_net_dev,
)
from belabox_metrics.collectors.procfs import FsRoot

HEADER = ("Inter-|   Receive                                                |  Transmit\n"
          " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets "
          "errs drop fifo colls carrier compressed\n")


def line(name: str, rx: int, tx: int) -> str:
    return f"{name:>6}: {rx} {rx // 100} 0 0 0 0 0 0 {tx} {tx // 100} 0 0 0 0 0 0\n"


def test_parse_both_kernel_formats() -> None:
    # Old kernels printed "%6s:%8llu": a wide counter glues to the colon.
    text = HEADER + "  eth0:12345678901 2 3 4 0 0 0 0 5 6 7 8 0 0 0 0\n" + line("usb0", 100, 200)
    eth0, usb0 = parse_net_dev(text)
    assert eth0 == ("eth0", 12345678901, 2, 3, 4, 5, 6, 7, 8)
    assert (usb0.name, usb0.receive_bytes, usb0.transmit_bytes) == ("usb0", 100, 200)


@pytest.mark.parametrize(("name", "kept"), [
    ("usb0", True), ("wwan0", True), ("eth0", True), ("eth1", True), ("wlan0", True),
    ("enx001122334455", True), ("wwp0s20u4i6", True),
    ("lo", False), ("docker0", False), ("veth1a2b3c", False), ("br-0123abcd", False),
    ("wlan0mon", False), ("virbr0", False),
])
def test_default_filter_keeps_the_uplinks(name: str, kept: bool) -> None:
    assert NameFilter(None, DEFAULT_EXCLUDE)(name) is kept


def test_counter_deltas_reset_is_never_negative() -> None:
    assert counter_deltas((10, 20), (15, 25)) == ([5, 5], False)
    assert counter_deltas((10, 20), (3, 25)) == ([3, 25], True)


class Tree:
    def __init__(self, tmp_path: Path) -> None:
        self.proc = tmp_path / "proc"
        self.sys = tmp_path / "sys"
        (self.proc / "net").mkdir(parents=True)

    def write(self, interfaces: dict[str, tuple[int, int]], ifindex: dict[str, int]) -> None:
        (self.proc / "net/dev").write_text(
            HEADER + "".join(line(n, rx, tx) for n, (rx, tx) in interfaces.items()))
        for name, index in ifindex.items():
            folder = self.sys / "class/net" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "ifindex").write_text(f"{index}\n")


def make(tree: Tree, options: Options | None = None) -> tuple[NetworkCollector, FakeClock]:
    clock = FakeClock()
    ctx = CollectorContext(FsRoot(str(tree.proc), str(tree.sys)), clock, "t")
    return NetworkCollector(MetricSettings("network", 5.0, options=options), ctx), clock


def reported(samples: list) -> set[str]:  # type: ignore[type-arg]
    return {s.label("interface") for s in samples if s.label("interface")}


def dropped(samples: list) -> float:  # type: ignore[type-arg]
    return next(s.value for s in samples if s.name == "network.interfaces_dropped_total")


def test_include_and_empty_exclude(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    tree.write({"lo": (1, 1), "usb0": (1, 1), "eth0": (1, 1)}, {})
    only_usb, _ = make(tree, Options(include=r"usb\d+"))
    assert reported(only_usb.collect(1)) == {"usb0"}
    everything, _ = make(tree, Options(exclude=None))
    assert reported(everything.collect(1)) == {"lo", "usb0", "eth0"}


def test_cap_keeps_reported_interfaces_in_place(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    tree.write({"eth0": (1, 1), "usb0": (1, 1), "usb1": (1, 1)}, {})
    network, clock = make(tree, Options(max_interfaces=2))
    first = network.collect(1)
    assert reported(first) == {"eth0", "usb0"} and dropped(first) == 1
    # A new interface listed first by the kernel does not push out the reported ones.
    tree.write({"aaa0": (1, 1), "eth0": (2, 2), "usb0": (2, 2), "usb1": (2, 2)}, {})
    clock.advance(5)
    second = network.collect(2)
    assert reported(second) == {"eth0", "usb0"} and dropped(second) == 3
    # usb0 unplugged: its slot goes to the first waiting interface in kernel order.
    tree.write({"aaa0": (3, 3), "eth0": (3, 3), "usb1": (3, 3)}, {})
    clock.advance(5)
    third = network.collect(3)
    assert reported(third) == {"eth0", "aaa0"} and dropped(third) == 4
    # aaa0 just entered: no rate for it yet, eth0 has one.
    rates = {s.label("interface") for s in third if s.name.endswith("_per_second")}
    assert rates == {"eth0"}


def test_interface_back_after_absence_counts_reset_without_rate(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    tree.write({"usb0": (1_000_000, 5_000_000)}, {"usb0": 5})
    network, clock = make(tree)
    network.collect(1)
    tree.write({}, {})
    clock.advance(5)
    network.collect(2)
    # Re-enumerated with a new ifindex and counters from zero, after a missed cycle.
    tree.write({"usb0": (2_000, 9_000_000)}, {"usb0": 9})
    clock.advance(5)
    samples = network.collect(3)
    assert not [s for s in samples if s.name.endswith("_per_second")]
    resets = next(s.value for s in samples if s.name == "network.counter_resets_total")
    assert resets == 1  # the ifindex changed, even though tx went up, not down


def test_rates_never_negative_on_any_reset(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    tree.write({"wwan0": (500, 800)}, {"wwan0": 3})
    network, clock = make(tree)
    network.collect(1)
    tree.write({"wwan0": (100, 900)}, {"wwan0": 3})  # rx fell: reset
    clock.advance(2)
    rates = {s.name: s.value for s in network.collect(2) if s.name.endswith("_per_second")}
    assert rates == {"network.receive_bytes_per_second": 50.0,
                     "network.transmit_bytes_per_second": 450.0}


def test_more_than_256_reported_interfaces_all_keep_their_rates(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    names = [f"eth{i}" for i in range(400)]
    tree.write({n: (1000, 1000) for n in names}, {})
    network, clock = make(tree, Options(max_interfaces=512))
    network.collect(1)
    tree.write({n: (2000, 3000) for n in names}, {})
    clock.advance(5)
    second = network.collect(2)
    rates = {s.label("interface") for s in second if s.name == "network.transmit_bytes_per_second"}
    assert rates == set(names)  # none forgotten between cycles
