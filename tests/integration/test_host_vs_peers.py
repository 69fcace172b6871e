"""The host collectors against two independent readers of the same kernel counters, on
this machine, in the same test run: psutil (when importable) and Debian's
prometheus-node-exporter (started here on 127.0.0.1 with only the cpu, meminfo, diskstats,
netdev and loadavg collectors).

Counters are checked by bracketing: we read, the peer reads, we read again; a monotonic
counter the peer reports must lie between our two readings (same unit, same device), and
our two readings are microseconds-to-milliseconds apart, so they are close. A unit slip (a
sector size instead of 512, KiB instead of bytes, ticks instead of seconds) breaks the
bracket. Stated tolerances:

- memory total: equal to the byte; available: within 1 % of total (it moves between reads);
- load averages: equal to 2 decimals (retried when the kernel updated them mid-check);
- CPU usage percent over the same ~1 s window with one core kept busy: within 15 points
  per core and 10 for "all" (the windows differ by the scrape's duration);
- boot time: within 1 s of psutil's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from belabox_metrics.clock import SystemClock
from belabox_metrics.collectors.base import (
    Collector,
    CollectorContext,
    MetricSettings,
    registry,
)
from belabox_metrics.collectors.cpu import parse_proc_stat
from belabox_metrics.collectors.procfs import FsRoot
from belabox_metrics.model import Sample
from tests.helpers import free_port, require_tool, wait_for_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="compares against Linux /proc readers")

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_exposition(text: str) -> Series:
    out: Series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match:
            labels = tuple(sorted(_LABEL.findall(match.group(2) or "")))
            out[(match.group(1), labels)] = float(match.group(3))
    return out


def peer(series: Series, name: str, **labels: str) -> float:
    return series[(name, tuple(sorted(labels.items())))]


def collectors() -> dict[str, Collector]:
    ctx = CollectorContext(fs=FsRoot(), clock=SystemClock(), device_id="peers")
    specs = registry()
    return {name: specs[name].factory(MetricSettings(name, 5.0), ctx)
            for name in ("cpu", "memory", "disk", "network", "system")}


def collect_all(cols: dict[str, Collector]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    now_ms = int(time.time() * 1000)
    out = {}
    for collector in cols.values():
        for sample in collector.collect(now_ms):
            assert isinstance(sample, Sample) and sample.value is not None
            out[(sample.name, sample.labels)] = sample.value
    return out


def ours(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
         **labels: str) -> float:
    return values[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def node_exporter() -> Iterator[str]:
    binary = require_tool(NODE_EXPORTER, "prometheus-node-exporter")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
         "--collector.cpu", "--collector.meminfo", "--collector.diskstats",
         "--collector.netdev", "--collector.loadavg",
         # Compare every interface we report (Debian's default hides lo only).
         "--collector.netdev.device-exclude=^$"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=15.0, proc=proc)
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()


def scrape(url: str) -> Series:
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse_exposition(response.read().decode("utf-8"))


def between(low: float, value: float, high: float, what: str) -> None:
    # A few ulps of slack: node_exporter prints 305.268 ms of io time as 305.26800000000003 s,
    # ours is the same count divided once; bracketing is about counts, not float formatting.
    slack = 1e-9 * max(abs(low), abs(high), 1.0)
    assert low - slack <= value <= high + slack, f"{what}: peer {value} not within ours [{low}, {high}]"


def busy_core(seconds: float) -> subprocess.Popen[bytes]:
    """One core kept busy for a while, so usage is not ~0 on both sides."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


# ------------------------------------------------------------------ node_exporter


def test_counters_bracket_node_exporter(node_exporter: str) -> None:
    cols = collectors()
    with tempfile.NamedTemporaryFile(dir=os.environ.get("TMPDIR", "/var/tmp")) as handle:
        # Some disk writes so the disk counters are not all static.
        handle.write(os.urandom(1 << 20))
        handle.flush()
        os.fsync(handle.fileno())
    stat_before = parse_proc_stat(FsRoot().read_proc("stat"))
    before = collect_all(cols)
    theirs = scrape(node_exporter)
    after = collect_all(cols)
    stat_after = parse_proc_stat(FsRoot().read_proc("stat"))

    # Memory: totals equal; available moves a little between reads.
    total = ours(after, "memory.total_bytes")
    assert peer(theirs, "node_memory_MemTotal_bytes") == total
    assert peer(theirs, "node_memory_SwapTotal_bytes") == ours(after, "memory.swap_total_bytes")
    available = peer(theirs, "node_memory_MemAvailable_bytes")
    assert abs(available - ours(after, "memory.available_bytes")) <= 0.01 * total
    swap_used = (peer(theirs, "node_memory_SwapTotal_bytes")
                 - peer(theirs, "node_memory_SwapFree_bytes"))
    assert abs(swap_used - ours(after, "memory.swap_used_bytes")) <= 0.01 * max(total, 1)

    # Disk: every device we report is bracketed (node_exporter's default filter also keeps
    # whole disks such as vda/mmcblk0/nvme0n1).
    disks = {dict(labels)["device"] for name, labels in after if name == "disk.reads_total"}
    assert disks, "no disk reported on this machine"
    pairs = [("disk.reads_total", "node_disk_reads_completed_total"),
             ("disk.writes_total", "node_disk_writes_completed_total"),
             ("disk.read_bytes_total", "node_disk_read_bytes_total"),
             ("disk.written_bytes_total", "node_disk_written_bytes_total"),
             ("disk.io_time_seconds_total", "node_disk_io_time_seconds_total")]
    for device in disks:
        for mine, theirs_name in pairs:
            between(ours(before, mine, device=device), peer(theirs, theirs_name, device=device),
                    ours(after, mine, device=device), f"{mine}{{{device}}}")

    # Network: every interface we report is bracketed.
    interfaces = {dict(labels)["interface"] for name, labels in after
                  if name == "network.receive_bytes_total"}
    assert interfaces
    pairs = [("network.receive_bytes_total", "node_network_receive_bytes_total"),
             ("network.transmit_bytes_total", "node_network_transmit_bytes_total"),
             ("network.receive_packets_total", "node_network_receive_packets_total"),
             ("network.transmit_packets_total", "node_network_transmit_packets_total"),
             ("network.receive_errors_total", "node_network_receive_errs_total"),
             ("network.transmit_errors_total", "node_network_transmit_errs_total"),
             ("network.receive_drops_total", "node_network_receive_drop_total"),
             ("network.transmit_drops_total", "node_network_transmit_drop_total")]
    for interface in interfaces:
        for mine, theirs_name in pairs:
            between(ours(before, mine, interface=interface),
                    peer(theirs, theirs_name, device=interface),
                    ours(after, mine, interface=interface), f"{mine}{{{interface}}}")

    # CPU time counters: our parse of /proc/stat in USER_HZ ticks brackets node_exporter's
    # seconds (modes: user nice system idle iowait irq softirq steal).
    hz = os.sysconf("SC_CLK_TCK")
    modes = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    cores = [k for k in stat_after if k != "all"]
    for core in cores:
        for index, mode in enumerate(modes):
            low = stat_before[core][index] / hz
            high = stat_after[core][index] / hz
            value = peer(theirs, "node_cpu_seconds_total", cpu=core, mode=mode)
            if mode == "iowait":  # may fall: allowed to differ by a tick
                assert low - 1 / hz <= value <= high + 1 / hz
            else:
                between(low, value, high, f"cpu{core} {mode}")


def test_load_average_equals_node_exporter(node_exporter: str) -> None:
    cols = collectors()
    for _ in range(3):
        before = collect_all(cols)
        theirs = scrape(node_exporter)
        after = collect_all(cols)
        names = ("system.load1", "system.load5", "system.load15")
        if all(before[(n, ())] == after[(n, ())] for n in names):
            for name, theirs_name in zip(names, ("node_load1", "node_load5", "node_load15"),
                                         strict=True):
                assert round(peer(theirs, theirs_name), 2) == round(after[(name, ())], 2)
            return
        time.sleep(0.2)  # the kernel updated the averages mid-check (every 5 s): again
    pytest.fail("load averages changed during each of 3 attempts")


def test_cpu_usage_agrees_with_node_exporter(node_exporter: str) -> None:
    cols = collectors()
    cpu = cols["cpu"]
    busy = busy_core(3.0)
    try:
        time.sleep(0.3)
        cpu.collect(int(time.time() * 1000))
        first = scrape(node_exporter)
        time.sleep(1.5)
        samples = cpu.collect(int(time.time() * 1000))
        second = scrape(node_exporter)
    finally:
        busy.wait(timeout=10)
    usage = {s.label("cpu"): s.value for s in samples if s.name == "cpu.usage_percent"}
    busy_modes = ("user", "nice", "system", "irq", "softirq", "steal")
    all_busy = all_total = 0.0
    for core in (c for c in usage if c != "all"):
        def delta(mode: str, core: str = core) -> float:
            return (peer(second, "node_cpu_seconds_total", cpu=core, mode=mode)
                    - peer(first, "node_cpu_seconds_total", cpu=core, mode=mode))
        busy_s = sum(delta(m) for m in busy_modes)
        total_s = busy_s + max(delta("idle") + delta("iowait"), 0.0)
        all_busy += busy_s
        all_total += total_s
        assert usage[core] is not None
        assert abs(100 * busy_s / total_s - usage[core]) <= 15, core
    assert usage["all"] is not None
    assert abs(100 * all_busy / all_total - usage["all"]) <= 10
    # The busy core is visible at all: "all" is at least 100/cores percent minus slack.
    cores = len(usage) - 1
    assert usage["all"] >= 100 / cores - 15


# ------------------------------------------------------------------ psutil


@pytest.fixture(scope="module")
def psutil() -> Any:
    return pytest.importorskip("psutil")


def test_counters_bracket_psutil(psutil: Any) -> None:
    cols = collectors()
    before = collect_all(cols)
    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    disks = psutil.disk_io_counters(perdisk=True)
    nics = psutil.net_io_counters(pernic=True)
    load = psutil.getloadavg()
    boot = psutil.boot_time()
    after = collect_all(cols)

    total = ours(after, "memory.total_bytes")
    assert vm.total == total
    assert abs(vm.available - ours(after, "memory.available_bytes")) <= 0.01 * total
    assert swap.total == ours(after, "memory.swap_total_bytes")
    assert abs(swap.used - ours(after, "memory.swap_used_bytes")) <= 0.01 * total
    for key in (k for k in after if k[0] == "disk.reads_total"):
        device = dict(key[1])["device"]
        counters = disks[device]
        for mine, value in (("disk.reads_total", counters.read_count),
                            ("disk.writes_total", counters.write_count),
                            ("disk.read_bytes_total", counters.read_bytes),
                            ("disk.written_bytes_total", counters.write_bytes)):
            between(ours(before, mine, device=device), value, ours(after, mine, device=device),
                    f"{mine}{{{device}}} vs psutil")
    for key in (k for k in after if k[0] == "network.receive_bytes_total"):
        interface = dict(key[1])["interface"]
        counters = nics[interface]
        for mine, value in (("network.receive_bytes_total", counters.bytes_recv),
                            ("network.transmit_bytes_total", counters.bytes_sent),
                            ("network.receive_packets_total", counters.packets_recv),
                            ("network.transmit_packets_total", counters.packets_sent),
                            ("network.receive_errors_total", counters.errin),
                            ("network.transmit_errors_total", counters.errout),
                            ("network.receive_drops_total", counters.dropin),
                            ("network.transmit_drops_total", counters.dropout)):
            between(ours(before, mine, interface=interface), value,
                    ours(after, mine, interface=interface), f"{mine}{{{interface}}} vs psutil")
    if before[("system.load1", ())] == after[("system.load1", ())]:
        assert round(load[0], 2) == round(after[("system.load1", ())], 2)
    assert abs(boot - after[("system.boot_time_seconds", ())]) <= 1.0


def test_cpu_usage_agrees_with_psutil(psutil: Any) -> None:
    cpu = collectors()["cpu"]
    busy = busy_core(3.0)
    try:
        time.sleep(0.3)
        cpu.collect(int(time.time() * 1000))
        psutil.cpu_percent(percpu=True)
        psutil.cpu_percent()
        time.sleep(1.5)
        samples = cpu.collect(int(time.time() * 1000))
        theirs_cores = psutil.cpu_percent(percpu=True)
        theirs_all = psutil.cpu_percent()
    finally:
        busy.wait(timeout=10)
    usage = {s.label("cpu"): s.value for s in samples if s.name == "cpu.usage_percent"}
    for index, value in enumerate(theirs_cores):
        mine = usage.get(str(index))
        assert mine is not None
        assert abs(mine - value) <= 15, (index, mine, value)
    assert usage["all"] is not None
    assert abs(usage["all"] - theirs_all) <= 10


def test_psutil_sources_give_the_same_series(psutil: Any) -> None:
    """The macOS code paths (psutil-backed) run on Linux too: same metric names, same
    label keys, values that agree with the /proc readers."""
    from belabox_metrics.clock import FakeClock
    from belabox_metrics.collectors.cpu import CpuCollector, PsutilCpuSource
    from belabox_metrics.collectors.disk import DiskCollector, psutil_disk_counters
    from belabox_metrics.collectors.memory import MemoryCollector, psutil_figures
    from belabox_metrics.collectors.network import (
        NetworkCollector,
        SocketIfindex,
        psutil_net_counters,
    )

    clock = FakeClock()
    ctx = CollectorContext(fs=FsRoot(), clock=clock, device_id="psutil")
    proc_side: dict[str, Collector] = {
        "memory": MemoryCollector(MetricSettings("memory", 5.0), ctx),
        "disk": DiskCollector(MetricSettings("disk", 5.0), ctx),
        "network": NetworkCollector(MetricSettings("network", 5.0), ctx),
        "cpu": CpuCollector(MetricSettings("cpu", 5.0), ctx),
    }
    psutil_side: dict[str, Collector] = {
        "memory": MemoryCollector(MetricSettings("memory", 5.0), ctx, figures=psutil_figures),
        "disk": DiskCollector(MetricSettings("disk", 5.0), ctx, counters=psutil_disk_counters),
        "network": NetworkCollector(MetricSettings("network", 5.0), ctx,
                                    counters=psutil_net_counters, ifindex=SocketIfindex()),
        "cpu": CpuCollector(MetricSettings("cpu", 5.0), ctx, source=PsutilCpuSource()),
    }
    for side in (proc_side, psutil_side):
        for collector in side.values():
            collector.collect(1)
    clock.advance(1.0)
    time.sleep(0.2)
    for name in proc_side:
        mine = {(s.name, tuple(k for k, _ in s.labels)) for s in proc_side[name].collect(2)}
        theirs = {(s.name, tuple(k for k, _ in s.labels)) for s in psutil_side[name].collect(2)}
        if name == "cpu":  # psutil has no per-policy frequency on Linux
            mine = {m for m in mine if not m[0].startswith("cpu.frequency")}
            theirs = {m for m in theirs if not m[0].startswith("cpu.frequency")}
        assert mine == theirs, name
