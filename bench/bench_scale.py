"""How the footprint grows with the work: the agent on a generated RK3588-like /proc + /sys
tree at 1x, 10x and 100x the host series, beside node_exporter + vmagent reading the same
trees, all at once, into one real VictoriaMetrics on loopback (issue 9, "Benchmarks").

    .venv/bin/python -m bench.bench_scale                   # 75 s (15 s warm-up, 60 s measured)
    .venv/bin/python -m bench.bench_scale --seconds 120 --no-peers
    .venv/bin/python -m bench.bench_scale --quick           # ~20 s

The tree is tests/fixtures/proc-sys/rk3588-under-load (8 cores, 3 cpufreq policies, 7
thermal zones, eMMC + NVMe) with /proc/net/dev replaced by N interfaces: 2 (the BELABOX's
two uplinks), then as many as make 10x and 100x the host collectors' series (each interface
is 11 series). A thread in this process advances /proc/stat, /proc/net/dev, /proc/diskstats,
/proc/uptime and the zone temperatures once a second, rewriting each file in place at a
fixed length: the agent keeps its /proc files open and re-reads them with pread, as the
kernel's files are read. memory and cpufreq stay constant.

Each agent runs the default config (configs/config.yaml: cpu, network 5 s, memory, disk,
thermal 10 s, system 30 s, remote every 10 s, 500 per request; self-metrics every 30 s) with
``host.proc_root``/``host.sys_root`` on its tree and ``network.max_interfaces`` raised to N.
The peers: node_exporter restricted to the collectors that read the same files
(cpu, cpufreq, meminfo, diskstats, netdev from /proc/net/dev, thermal_zone, loadavg, stat)
with ``--path.procfs``/``--path.sysfs`` on the same tree, scraped every 5 s by its own vmagent.
Figures and their sources are bench_footprint's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.helpers import free_port
from tests.vm import VictoriaMetrics, vm_available

from bench._common import REPO_ROOT, table, temp_dir
from bench.bench_footprint import (
    NODE_EXPORTER,
    VMAGENT,
    Measured,
    Side,
    Watcher,
    cpu_source,
    default_config,
    export_count,
    prom_value,
    start_agent,
    stop,
    wait_http,
)

BASE_TREE = REPO_ROOT / "tests" / "fixtures" / "proc-sys" / "rk3588-under-load" / "before"
SERIES_PER_INTERFACE = 11  # 8 counters, 2 byte rates, counter_resets_total (collectors/network.py)
LINE = 512  # bytes per /proc/net/dev line: divides the agent's 16 KiB reads and a 4 KiB page
WIDTH = 20  # every generated number is right-aligned in this many columns: fixed file lengths
NODE_COLLECTORS = ("cpu", "cpufreq", "meminfo", "diskstats", "netdev", "thermal_zone", "loadavg", "stat")
SCALES = (1, 10, 100)


def _n(value: float, width: int = WIDTH) -> str:
    return f"{int(value):>{width}}"


class FixtureTree:
    """A /proc + /sys tree whose counters move once a second like a busy RK3588's."""

    def __init__(self, root: Path, interfaces: int, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        shutil.copytree(BASE_TREE, root, ignore=shutil.ignore_patterns("dev"))  # net/dev is ours
        shutil.rmtree(root / "sys" / "class" / "net")
        self.names = [f"eth{i}" if i == 0 else f"usb{i - 1}" for i in range(interfaces)]
        for index, name in enumerate(self.names, start=2):
            (root / "sys" / "class" / "net" / name).mkdir(parents=True)
            (root / "sys" / "class" / "net" / name / "ifindex").write_text(f"{index}\n")
        self.cores = [[100_000 + n * 1000, 200, 40_000, 2_000_000, 3000, 0, 9000, 0, 0, 0] for n in range(8)]
        self.net = [[1_000_000_000, 1_000_000, 0, 0, 0, 0, 0, 0, 1_000_000_000, 1_000_000, 0, 0, 0, 0, 0, 0]
                    for _ in self.names]
        self.disk_lines = (root / "proc" / "diskstats").read_text().splitlines()
        self.disks = [[int(f) for f in line.split()[3:]] for line in self.disk_lines]
        self.uptime = 86_400.0
        self.zones = sorted((root / "sys" / "class" / "thermal").glob("thermal_zone*/temp"))
        self.temps = [55_000 for _ in self.zones]
        self._handles: dict[Path, int] = {}
        self.tick(first=True)

    def _write(self, path: Path, text: str, first: bool) -> None:
        if first:
            path.write_text(text)
            return
        fd = self._handles.get(path)
        if fd is None:
            fd = self._handles[path] = os.open(path, os.O_WRONLY)
        os.pwrite(fd, text.encode(), 0)  # same length: a reader sees a whole file, old or new

    def tick(self, first: bool = False) -> None:
        rng = self.rng
        for core in self.cores:  # 100 jiffies a second, a random share busy
            busy = rng.randint(5, 95)
            core[0] += busy * 3 // 4
            core[2] += busy - busy * 3 // 4
            core[3] += 100 - busy
        total = [sum(c[i] for c in self.cores) for i in range(10)]
        stat = ["cpu  " + " ".join(_n(v) for v in total)]
        stat += [f"cpu{n} " + " ".join(_n(v) for v in c) for n, c in enumerate(self.cores)]
        stat += ["ctxt 88512346", "btime 1699913599", "processes 152345", "procs_running 3", "procs_blocked 0"]
        self._write(self.root / "proc" / "stat", "\n".join(stat) + "\n", first)

        for counters in self.net:
            for field_index, step in ((0, 400_000), (8, 800_000)):  # bytes, then packets ~ bytes / 1200
                grown = rng.randint(0, step)
                counters[field_index] += grown
                counters[field_index + 1] += grown // 1200
            if rng.random() < 0.01:
                counters[3] += 1  # an occasional drop
        dev = ["Inter-|   Receive                                                |  Transmit",
               " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
               "carrier compressed"]
        dev += [f"{name:>8}:" + " ".join(_n(v) for v in counters) for name, counters in zip(self.names, self.net,
                                                                                             strict=True)]
        # Every line LINE bytes: the agent re-reads a long file in 16 KiB preads, so a chunk
        # (and a page) never ends inside a number a concurrent rewrite is changing.
        self._write(self.root / "proc" / "net" / "dev", "".join(line.ljust(LINE - 1) + "\n" for line in dev), first)

        lines = []
        for line, fields in zip(self.disk_lines, self.disks, strict=True):
            head = line.split()[:3]
            if head[2] in ("mmcblk0", "nvme0n1"):
                fields[0] += rng.randint(0, 20)  # reads
                fields[2] += rng.randint(0, 4000)  # sectors read
                fields[4] += rng.randint(0, 60)  # writes
                fields[6] += rng.randint(0, 8000)  # sectors written
                fields[9] += rng.randint(0, 300)  # ms doing I/O
            lines.append(" ".join(f"{h:>12}" for h in head) + " " + " ".join(_n(v) for v in fields))
        self._write(self.root / "proc" / "diskstats", "\n".join(lines) + "\n", first)

        self.uptime += 1.0
        self._write(self.root / "proc" / "uptime", f"{self.uptime:>16.2f} {self.uptime * 7.5:>16.2f}\n", first)
        for index, path in enumerate(self.zones):
            self.temps[index] = min(95_000, max(30_000, self.temps[index] + rng.randint(-462, 462)))
            self._write(path, f"{self.temps[index]}\n", first)

    def host_settings(self) -> dict[str, Any]:
        """The config's ``host`` section that points the agent at this tree."""
        return {"host": {"proc_root": str(self.root / "proc"), "sys_root": str(self.root / "sys")}}

    def close(self) -> None:
        for fd in self._handles.values():
            os.close(fd)
        self._handles.clear()


class Ticker:
    """Advances every tree once a second until stopped."""

    def __init__(self, trees: list[FixtureTree]) -> None:
        self.trees = trees
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-ticker", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for tree in self.trees:
                tree.tick()

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for tree in self.trees:
            tree.close()


def host_series(root: Path, interfaces: int) -> int:
    """Series the six host collectors produce on a tree (collected twice: rates need two)."""
    from belabox_metrics.clock import SystemClock
    from belabox_metrics.collectors.base import CollectorContext, CollectorError, MetricSettings, registry
    from belabox_metrics.collectors.network import Options
    from belabox_metrics.collectors.procfs import FsRoot

    ctx = CollectorContext(fs=FsRoot(str(root / "proc"), str(root / "sys")), clock=SystemClock(), device_id="x")
    specs = registry()
    collectors = []
    for name in ("cpu", "memory", "disk", "network", "thermal", "system"):
        options = Options(max_interfaces=max(1, interfaces)) if name == "network" else None
        collectors.append(specs[name].factory(MetricSettings(name, 5.0, options=options), ctx))
    series: set[tuple[str, object]] = set()
    for cycle in range(2):
        if cycle:
            time.sleep(0.2)
        for collector in collectors:
            with contextlib.suppress(CollectorError):  # no zone: the cycle still counts the rest
                series.update((s.name, s.labels) for s in collector.collect(int(time.time() * 1000)))
    return len(series)


def base_host_series(workdir: Path, base_interfaces: int) -> int:
    """Host series of the base tree with ``base_interfaces`` interfaces (built and removed)."""
    probe = FixtureTree(workdir / "probe", base_interfaces, seed=0)
    try:
        return host_series(probe.root, base_interfaces)
    finally:
        probe.close()


def scaled_metrics(interfaces: int) -> list[dict[str, Any]]:
    """The shipped config's host collectors, the network one allowed ``interfaces``."""
    metrics = yaml.safe_load((REPO_ROOT / "configs" / "config.yaml").read_text())["metrics"]
    return [({**m, "max_interfaces": max(32, interfaces)} if m["name"] == "network" else m)
            for m in metrics if m["name"] in ("cpu", "memory", "disk", "network", "thermal", "system")]


def interfaces_for(scale: int, base_interfaces: int, base_series: int) -> int:
    """Interfaces that make ``scale`` times the base tree's host series."""
    fixed = base_series - SERIES_PER_INTERFACE * base_interfaces
    return max(base_interfaces, round((scale * base_series - fixed) / SERIES_PER_INTERFACE))


@dataclass
class Level:
    scale: int
    interfaces: int
    host_series: int
    tree: FixtureTree
    ours: Side
    peers: Side | None = None
    agent: subprocess.Popen[bytes] | None = None
    exporter: subprocess.Popen[bytes] | None = None
    vmagent: subprocess.Popen[bytes] | None = None
    agent_metrics: str = ""
    vmagent_metrics: str = ""


def run(seconds: float, warmup: float, peers: bool, workdir: Path, base_interfaces: int = 2) -> tuple[list[Level],
                                                                                                       float]:
    binary = vm_available()
    if binary is None or (peers and not all(os.access(b, os.X_OK) for b in (NODE_EXPORTER, VMAGENT))):
        raise SystemExit("needs Debian victoria-metrics (and vmagent, prometheus-node-exporter unless --no-peers)")
    base_series = base_host_series(workdir, base_interfaces)
    levels: list[Level] = []
    for scale in SCALES:
        interfaces = interfaces_for(scale, base_interfaces, base_series)
        tree = FixtureTree(workdir / f"tree-{scale}x", interfaces, seed=scale)
        levels.append(Level(scale, interfaces, host_series(tree.root, interfaces), tree, Side(f"agent {scale}x", [])))
    vm = VictoriaMetrics(binary, workdir / "vm", free_port())
    vm.start()
    try:
        with Ticker([level.tree for level in levels]):
            for level in levels:
                _start(level, vm, workdir, peers)
            for level in levels:
                wait_http(level.agent_metrics, proc=level.agent)
                level.ours.processes = [Measured(f"agent {level.scale}x", _pid(level.agent))]
                if peers:
                    wait_http(level.vmagent_metrics, proc=level.vmagent)
                    level.peers = Side(f"node_exporter + vmagent {level.scale}x",
                                       [Measured("node_exporter", _pid(level.exporter)),
                                        Measured("vmagent", _pid(level.vmagent))])
            watched = [p for level in levels for side in (level.ours, level.peers) if side for p in side.processes]
            with Watcher(watched) as watcher:
                time.sleep(warmup)
                start_ms = int(time.time() * 1000)
                watcher.start_window()
                before = [_wire(level) for level in levels]
                started = time.monotonic()
                while time.monotonic() - started < seconds - warmup:
                    time.sleep(0.5)
                    for level in levels:
                        for name, proc in (("agent", level.agent), ("node_exporter", level.exporter),
                                           ("vmagent", level.vmagent)):
                            if proc is not None and proc.poll() is not None:
                                raise RuntimeError(f"{name} {level.scale}x exited with {proc.returncode}")
                watcher.end_window()
                end_ms = int(time.time() * 1000)
                window_s = time.monotonic() - started
                for level, wire_before in zip(levels, before, strict=True):
                    after = _wire(level)
                    level.ours.wire_bytes, level.ours.wire_samples = after[0] - wire_before[0], after[1] - wire_before[1]
                    if level.peers is not None:
                        level.peers.wire_bytes = after[2] - wire_before[2]
                        level.peers.wire_samples = after[3] - wire_before[3]
            for level in levels:
                stop(level.agent)
        time.sleep(3)  # vmagent flushes every second
        for level in levels:
            level.ours.samples, level.ours.series = export_count(vm, f'{{device_id="scale-{level.scale}x"}}',
                                                                 start_ms, end_ms)
            if level.peers is not None:
                level.peers.samples, level.peers.series = export_count(vm, f'{{job="node-{level.scale}x"}}',
                                                                       start_ms, end_ms)
        return levels, window_s
    finally:
        for level in levels:
            stop(level.agent)
            stop(level.vmagent, signal.SIGINT)
            stop(level.exporter)
        vm.stop()


def _pid(proc: subprocess.Popen[bytes] | None) -> int:
    assert proc is not None
    return proc.pid


def _start(level: Level, vm: VictoriaMetrics, workdir: Path, peers: bool) -> None:
    health_port = free_port()
    config = default_config(workdir, f"scale-{level.scale}x", vm.import_url, health_port,
                            metrics=scaled_metrics(level.interfaces), extra=level.tree.host_settings())
    level.agent = start_agent(config, workdir / f"agent-{level.scale}x.log")
    level.agent_metrics = f"http://127.0.0.1:{health_port}/metrics"
    if not peers:
        return
    exporter_port, vmagent_port = free_port(), free_port()
    scrape = workdir / f"scrape-{level.scale}x.yml"
    scrape.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "5s"},
        "scrape_configs": [{"job_name": f"node-{level.scale}x",
                            "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}]}))
    with (workdir / f"peers-{level.scale}x.log").open("ab") as log:
        level.exporter = subprocess.Popen(
            [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{exporter_port}",
             f"--path.procfs={level.tree.root / 'proc'}", f"--path.sysfs={level.tree.root / 'sys'}",
             "--collector.disable-defaults", *(f"--collector.{c}" for c in NODE_COLLECTORS),
             "--no-collector.netdev.netlink"], stdout=log, stderr=subprocess.STDOUT)
        level.vmagent = subprocess.Popen(
            [VMAGENT, f"-httpListenAddr=127.0.0.1:{vmagent_port}", f"-promscrape.config={scrape}",
             f"-remoteWrite.url={vm.url}/api/v1/write",
             f"-remoteWrite.tmpDataPath={workdir / f'vmagent-{level.scale}x'}", "-loggerLevel=ERROR"],
            stdout=log, stderr=subprocess.STDOUT)
    level.vmagent_metrics = f"http://127.0.0.1:{vmagent_port}/metrics"


def _wire(level: Level) -> tuple[float, float, float, float]:
    ours = (prom_value(level.agent_metrics, "uploader_bytes_sent_total"),
            prom_value(level.agent_metrics, "uploader_metrics_uploaded_total"))
    if level.peers is None:
        return (*ours, 0.0, 0.0)
    return (*ours, prom_value(level.vmagent_metrics, "vmagent_remotewrite_bytes_sent_total"),
            prom_value(level.vmagent_metrics, "vmagent_remotewrite_rows_pushed_after_relabel_total"))


def report(levels: list[Level], window_s: float, seconds: float, warmup: float) -> str:
    rows: list[list[object]] = []
    base = levels[0]
    for level in levels:
        for side in (level.ours, level.peers):
            if side is None:
                continue
            rows.append([side.label, level.interfaces, level.host_series if side is level.ours else "",
                         side.series, side.samples, side.rss_mean_mb, side.hwm_mb, 100 * side.cpu_s / window_s,
                         side.us_per_sample(), side.bytes_per_sample()])
        if level.peers is not None and level.peers.samples:
            rows.append(["  agent / peers", "", "", "", "", level.ours.rss_mean_mb / level.peers.rss_mean_mb,
                         level.ours.hwm_mb / level.peers.hwm_mb,
                         level.ours.cpu_s / level.peers.cpu_s if level.peers.cpu_s else "",
                         level.ours.us_per_sample() / level.peers.us_per_sample(),
                         level.ours.bytes_per_sample() / level.peers.bytes_per_sample()])
    headers = ["run", "interfaces", "host series", "series delivered", "samples delivered", "RSS mean MB",
               "VmHWM MB", "CPU % of a core", "µs CPU/sample", "wire B/sample"]
    growth = []
    for level in levels[1:]:
        line = [f"{level.scale}x vs 1x:"]
        for side, first in ((level.ours, base.ours), (level.peers, base.peers)):
            if side is None or first is None:
                continue
            extra = side.samples - first.samples
            line.append(f"{side.label.rsplit(' ', 1)[0]}: samples x{side.samples / max(1, first.samples):.1f}, "
                        f"CPU x{side.cpu_s / first.cpu_s if first.cpu_s else float('nan'):.1f}, "
                        f"{(side.cpu_s - first.cpu_s) * 1e6 / extra if extra else float('nan'):.1f} µs per added "
                        f"sample, VmHWM +{side.hwm_mb - first.hwm_mb:.1f} MB;")
        growth.append(" ".join(line))
    return (table(headers, rows) + f"\n\nwindow {window_s:.0f} s after a {warmup:.0f} s warm-up ({seconds:.0f} s "
            f"run); {cpu_source([p for lv in levels for sd in (lv.ours, lv.peers) if sd for p in sd.processes])}"
            "; agent / peers row: RSS mean, VmHWM, CPU seconds, "
            "µs/sample, B/sample ratios\n" + "\n".join(growth))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="agent footprint at 1x, 10x, 100x the series")
    parser.add_argument("--seconds", type=float, default=75.0, help="whole run, warm-up included")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--no-peers", action="store_true", help="the agents only")
    parser.add_argument("--quick", action="store_true", help="~20 s run, 5 s warm-up (CI smoke)")
    args = parser.parse_args(argv)
    seconds, warmup = (20.0, 5.0) if args.quick else (args.seconds, args.warmup)
    if seconds <= warmup + 5:
        parser.error("--seconds must exceed the warm-up by at least 5 s")
    with temp_dir("bench-scale-") as directory:
        levels, window_s = run(seconds, warmup, not args.no_peers, Path(directory))
    print(report(levels, window_s, seconds, warmup))
    if any(not level.ours.samples for level in levels):
        print("an agent delivered nothing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
