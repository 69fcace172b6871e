"""Footprint at the default config: the agent beside Debian's prometheus-node-exporter +
vmagent doing the same job, in the same run, both writing to one real VictoriaMetrics on
loopback (issue 9, "Benchmarks").

    .venv/bin/python -m bench.bench_footprint                 # 120 s (40 s warm-up, 80 s measured)
    .venv/bin/python -m bench.bench_footprint --seconds 180
    .venv/bin/python -m bench.bench_footprint --quick         # ~20 s (5 s warm-up)
    .venv/bin/python -m bench.bench_footprint --production    # https to nginx with a token (issue 16)

(a) The agent, ``python -m belabox_metrics run``, with configs/config.yaml as shipped except:
vm-jsonl to VictoriaMetrics' /api/v1/import, a temp database, health on a free loopback port,
``thermal`` with ``mock: true`` (this machine may have no thermal zone) and without
``cpu.temperature`` (it needs a sensor); srt.packet_loss is disabled there already.
Self-metrics are on (every 30 s). ``MALLOC_ARENA_MAX=2`` as the systemd unit sets it.
(b) ``prometheus-node-exporter`` (default collectors) scraped every 5 s by ``vmagent``, remote
write to the same VictoriaMetrics.
(c) ``bench/python_floor.py``, the least a CPython process does for the agent's job at about
the agent's sample rate (read the files, one fsync'd commit per 5 s round, one request and one
fsync'd cursor commit per 10 s, nothing else), and the same without an fsync per commit (a
what-if): where the per-sample CPU of any CPython agent starts.

Per process, over the window after the warm-up: RSS (mean of VmRSS read every second, and
VmHWM, the peak since start), CPU seconds (utime + stime of /proc/PID/stat), samples delivered
(VictoriaMetrics' /api/v1/export for the window's timestamps: ``{device_id="..."}`` for the
agent, ``{job="node"}`` for the peers) and bytes on the wire (request bodies: the agent's
``uploader_bytes_sent_total`` over ``uploader_metrics_uploaded_total``, vmagent's
``vmagent_remotewrite_bytes_sent_total`` over ``vmagent_remotewrite_rows_pushed_after_relabel_total``).
Targets: agent RSS <= 25 MB (issue 9); the agent's total CPU <= 0.2x the peers' (issue 21, which
withdrew issue 9's <= 8 µs per sample: below the python floor). With ``--production``
the agent uploads as a real deployment does, over https to a real nginx (TLS with a CA made by
openssl, the bearer token checked) in front of the same VictoriaMetrics: target RSS <= 30 MB
(issue 16); the peers and floors are unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.helpers import free_port
from tests.vm import VictoriaMetrics, vm_available

from bench._common import REPO_ROOT, table, temp_dir

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
VMAGENT = "/usr/bin/vmagent"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEVICE_ID = "footprint-box"
# bench/python_floor.py, the least CPython can do for the same job: as durable as the agent,
# and (a what-if) without an fsync per commit. Each is its own device_id.
FLOORS = {"python-floor": "FULL", "python-floor-no-fsync": "NORMAL"}
HOST_COLLECTORS = ("cpu", "memory", "disk", "network", "thermal", "system")
# The agent's own metrics as VictoriaMetrics names them (selfmetrics.py, agent.py families).
SELF_METRICS = "(collector|storage|uploader|time)_.*"
RSS_TARGET_MB = 25.0
PRODUCTION_RSS_TARGET_MB = 30.0  # https with a token: OpenSSL loaded (issue 16)
TOTAL_CPU_TARGET_RATIO = 0.2  # the agent's CPU seconds over the peers' (issue 21)


# -- one process, read from /proc -------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_ns(pid: int) -> tuple[int, frozenset[int]]:
    """CPU time of a process's live threads in ns (first field of each
    /proc/PID/task/TID/schedstat), and their ids: the stat fields above count in 1/CLK_TCK s,
    10 ms here, which is 10-20 % of what the agent spends in a minute."""
    total, tids = 0, []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that just exited
            with open(f"/proc/{pid}/task/{tid}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
            tids.append(int(tid))
    return total, frozenset(tids)


def status_kb(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class Measured:
    """One watched process: RSS readings (kB) once a second, CPU at the window's edges."""

    name: str
    pid: int
    rss_kb: list[int] = field(default_factory=list)
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    run_start: tuple[int, frozenset[int]] = (0, frozenset())
    run_end: tuple[int, frozenset[int]] = (0, frozenset())
    hwm_kb: int = 0

    @property
    def ticks_s(self) -> float:
        return self.cpu_end - self.cpu_start

    @property
    def precise(self) -> bool:
        """The ns figure holds when the same threads lived at both edges and it agrees with
        the tick figure (a thread born and gone inside the window would be missed)."""
        ns = (self.run_end[0] - self.run_start[0]) / 1e9
        same = bool(self.run_start[1]) and self.run_start[1] == self.run_end[1]
        return same and abs(ns - self.ticks_s) <= 2.0 / CLK_TCK + 0.05 * self.ticks_s

    @property
    def cpu_s(self) -> float:
        return (self.run_end[0] - self.run_start[0]) / 1e9 if self.precise else self.ticks_s

    @property
    def rss_mean_mb(self) -> float:
        return sum(self.rss_kb) / len(self.rss_kb) / 1024 if self.rss_kb else 0.0

    @property
    def hwm_mb(self) -> float:
        return self.hwm_kb / 1024


class Watcher:
    """Reads VmRSS of every watched process once a second while ``recording`` is set."""

    def __init__(self, processes: list[Measured], period: float = 1.0) -> None:
        self.processes = processes
        self.period = period
        self.recording = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            if self.recording.is_set():
                for p in self.processes:
                    with contextlib.suppress(OSError):  # exited: the caller sees it through poll()
                        p.rss_kb.append(status_kb(p.pid, "VmRSS"))

    def start_window(self) -> None:
        for p in self.processes:
            p.cpu_start, p.run_start = cpu_seconds(p.pid), run_ns(p.pid)
        self.recording.set()

    def end_window(self) -> None:
        self.recording.clear()
        for p in self.processes:
            p.cpu_end, p.run_end = cpu_seconds(p.pid), run_ns(p.pid)
            p.hwm_kb = status_kb(p.pid, "VmHWM")

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- HTTP on loopback ----------------------------------------------------------------------------
def prom_value(url: str, name: str) -> float:
    """Sum of every series of one metric in a Prometheus text page."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def export_count(vm: VictoriaMetrics, match: str, start_ms: int, end_ms: int) -> tuple[int, int]:
    """(samples, series) VictoriaMetrics holds for ``match`` with start_ms <= ts <= end_ms."""
    vm.flush()
    query = urllib.parse.urlencode({"match[]": match, "start": f"{start_ms / 1000:.3f}",
                                    "end": f"{end_ms / 1000:.3f}"})
    samples = series = 0
    with urllib.request.urlopen(f"{vm.url}/api/v1/export?{query}", timeout=60) as answer:
        for line in answer:
            if line.strip():
                series += 1
                samples += sum(1 for ts in json.loads(line)["timestamps"] if start_ms <= ts <= end_ms)
    return samples, series


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer")


# -- the agent -------------------------------------------------------------------------------------
def default_config(workdir: Path, device_id: str, import_url: str, health_port: int,
                   metrics: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """configs/config.yaml as shipped, pointed at VictoriaMetrics; ``metrics`` replaces the
    metric list (default: the shipped host collectors, thermal mocked when there is no zone)."""
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / "configs" / "config.yaml").read_text())
    config["device"] = {"id": device_id}
    config["storage"] = {**config.get("storage", {}), "path": str(workdir / f"{device_id}.db")}
    config["remote"] = {**config["remote"], "url": import_url, "format": "vm-jsonl"}
    config["health"] = {"listen": f"127.0.0.1:{health_port}"}
    config["logging"] = {"level": "info", "format": "json"}
    if metrics is None:
        has_thermal = os.path.isdir("/sys/class/thermal") and any(
            n.startswith("thermal_zone") for n in os.listdir("/sys/class/thermal"))
        metrics = []
        for entry in config["metrics"]:
            if entry["name"] in HOST_COLLECTORS:
                metrics.append({**entry, "mock": True} if entry["name"] == "thermal" and not has_thermal else entry)
    config["metrics"] = metrics
    for key, value in (extra or {}).items():
        config[key] = {**config.get(key, {}), **value}
    path = workdir / f"{device_id}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # as the systemd unit sets it
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "belabox_metrics", "run", "--config", str(config)],
                                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the run -----------------------------------------------------------------------------------------
@dataclass
class Side:
    label: str
    processes: list[Measured]
    samples: int = 0
    series: int = 0
    wire_bytes: float = 0.0
    wire_samples: float = 0.0
    self_samples: int = 0  # of ``samples``, the agent's own metrics

    @property
    def cpu_s(self) -> float:
        return sum(p.cpu_s for p in self.processes)

    @property
    def rss_mean_mb(self) -> float:
        return sum(p.rss_mean_mb for p in self.processes)

    @property
    def hwm_mb(self) -> float:
        return sum(p.hwm_mb for p in self.processes)

    def us_per_sample(self) -> float:
        return self.cpu_s * 1e6 / self.samples if self.samples else float("nan")

    def bytes_per_sample(self) -> float:
        return self.wire_bytes / self.wire_samples if self.wire_samples else float("nan")


def production(workdir: Path, vm: VictoriaMetrics) -> tuple[str, dict[str, Any], Any]:
    """The production configuration: https to a real nginx (TLS with a CA made by openssl,
    bearer token checked) in front of VictoriaMetrics. Returns (url, remote settings, nginx)."""
    import shutil

    from tests.servers import TOKEN, start_nginx
    from tests.tlsfiles import make_pki
    if not shutil.which("openssl") or not (shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK)):
        raise SystemExit("--production needs Debian nginx and openssl")
    pki = make_pki(workdir / "pki")
    nginx = start_nginx(workdir, pki, vm.port)
    token = workdir / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return (f"https://localhost:{nginx.port}/api/v1/import",
            {"token_file": str(token), "tls": {"ca_file": str(pki.ca)}}, nginx)


def run(seconds: float, warmup: float, workdir: Path,
        prod: bool = False) -> tuple[Side, Side, list[Side], float]:
    binary = vm_available()
    missing = [b for b in (NODE_EXPORTER, VMAGENT) if not os.access(b, os.X_OK)]
    if binary is None or missing:
        raise SystemExit(f"needs Debian victoria-metrics, vmagent and prometheus-node-exporter (missing: "
                         f"{missing or 'victoria-metrics'})")
    vm = VictoriaMetrics(binary, workdir / "vm", free_port())
    agent: subprocess.Popen[bytes] | None = None
    exporter: subprocess.Popen[bytes] | None = None
    vmagent: subprocess.Popen[bytes] | None = None
    floors: dict[str, subprocess.Popen[bytes]] = {}
    nginx: Any = None
    vm.start()
    try:
        health_port, exporter_port, vmagent_port = free_port(), free_port(), free_port()
        if prod:
            url, remote, nginx = production(workdir, vm)
            config = default_config(workdir, DEVICE_ID, url, health_port, extra={"remote": remote})
        else:
            config = default_config(workdir, DEVICE_ID, vm.import_url, health_port)
        scrape = workdir / "scrape.yml"
        scrape.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "5s"},
            "scrape_configs": [{"job_name": "node",
                                "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}]}))
        agent = start_agent(config, workdir / "agent.log")
        with (workdir / "peers.log").open("ab") as log:
            exporter = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{exporter_port}"],
                                        stdout=log, stderr=subprocess.STDOUT)
            vmagent = subprocess.Popen(
                [VMAGENT, f"-httpListenAddr=127.0.0.1:{vmagent_port}", f"-promscrape.config={scrape}",
                 f"-remoteWrite.url={vm.url}/api/v1/write", f"-remoteWrite.tmpDataPath={workdir / 'vmagent'}",
                 "-loggerLevel=ERROR"], stdout=log, stderr=subprocess.STDOUT)
            for device, synchronous in FLOORS.items():
                floors[device] = subprocess.Popen(
                    [sys.executable, str(REPO_ROOT / "bench" / "python_floor.py"), "--db", str(workdir / f"{device}.db"),
                     "--url", vm.import_url, "--device-id", device, "--synchronous", synchronous],
                    stdout=log, stderr=subprocess.STDOUT)
        agent_metrics = f"http://127.0.0.1:{health_port}/metrics"
        vmagent_metrics = f"http://127.0.0.1:{vmagent_port}/metrics"
        wait_http(agent_metrics, proc=agent)
        wait_http(f"http://127.0.0.1:{exporter_port}/metrics", proc=exporter)
        wait_http(vmagent_metrics, proc=vmagent)

        ours = Side("agent", [Measured("agent", agent.pid)])
        peers = Side("node_exporter + vmagent", [Measured("node_exporter", exporter.pid),
                                                 Measured("vmagent", vmagent.pid)])
        least = [Side(device, [Measured(device, proc.pid)]) for device, proc in floors.items()]
        with Watcher(ours.processes + peers.processes + [p for s in least for p in s.processes]) as watcher:
            time.sleep(warmup)
            start_ms = int(time.time() * 1000)
            watcher.start_window()
            ours_bytes0 = prom_value(agent_metrics, "uploader_bytes_sent_total")
            ours_sent0 = prom_value(agent_metrics, "uploader_metrics_uploaded_total")
            peer_bytes0 = prom_value(vmagent_metrics, "vmagent_remotewrite_bytes_sent_total")
            peer_rows0 = prom_value(vmagent_metrics, "vmagent_remotewrite_rows_pushed_after_relabel_total")
            started = time.monotonic()
            while time.monotonic() - started < seconds - warmup:
                time.sleep(0.5)
                for name, proc in (("agent", agent), ("node_exporter", exporter), ("vmagent", vmagent),
                                   *floors.items()):
                    if proc.poll() is not None:
                        raise RuntimeError(f"{name} exited with {proc.returncode} during the run")
            watcher.end_window()
            end_ms = int(time.time() * 1000)
            window_s = time.monotonic() - started
        ours.wire_bytes = prom_value(agent_metrics, "uploader_bytes_sent_total") - ours_bytes0
        ours.wire_samples = prom_value(agent_metrics, "uploader_metrics_uploaded_total") - ours_sent0
        peers.wire_bytes = prom_value(vmagent_metrics, "vmagent_remotewrite_bytes_sent_total") - peer_bytes0
        peers.wire_samples = (prom_value(vmagent_metrics, "vmagent_remotewrite_rows_pushed_after_relabel_total")
                              - peer_rows0)
        stop(agent)  # SIGTERM: the last upload goes out within shutdown_grace
        for proc in floors.values():
            stop(proc)  # likewise
        time.sleep(3)  # vmagent flushes every second
        ours.samples, ours.series = export_count(vm, f'{{device_id="{DEVICE_ID}"}}', start_ms, end_ms)
        ours.self_samples = export_count(vm, f'{{device_id="{DEVICE_ID}",__name__=~"{SELF_METRICS}"}}',
                                         start_ms, end_ms)[0]
        peers.samples, peers.series = export_count(vm, '{job="node"}', start_ms, end_ms)
        for side in least:
            side.samples, side.series = export_count(vm, f'{{device_id="{side.label}"}}', start_ms, end_ms)
        return ours, peers, least, window_s
    finally:
        stop(agent)
        for proc in floors.values():
            stop(proc)
        stop(vmagent, signal.SIGINT)
        stop(exporter)
        if nginx is not None:
            nginx.stop()
        vm.stop()


def cpu_source(processes: list[Measured]) -> str:
    coarse = [p.name for p in processes if not p.precise]
    return ("CPU from /proc/PID/task/*/schedstat (ns)" if not coarse else
            f"CPU from schedstat (ns), but from /proc/PID/stat at 1/{CLK_TCK} s for {', '.join(coarse)} "
            "(threads changed)")


def report(ours: Side, peers: Side, least: list[Side], window_s: float, seconds: float, warmup: float,
           rss_target: float = RSS_TARGET_MB) -> str:
    rows: list[list[object]] = []
    for side in (ours, peers, *least):
        for p in side.processes if len(side.processes) > 1 else []:
            rows.append([f"  {p.name}", p.rss_mean_mb, p.hwm_mb, f"{p.cpu_s:.3f}", 100 * p.cpu_s / window_s, "", "", "", ""])
        rows.append([side.label, side.rss_mean_mb, side.hwm_mb, f"{side.cpu_s:.3f}", 100 * side.cpu_s / window_s,
                     side.series, side.samples, side.us_per_sample(),
                     side.bytes_per_sample() if side.wire_samples else ""])
    for label, other in (("agent / peers", peers), ("agent / python floor", least[0])):
        rows.append([label, ours.rss_mean_mb / other.rss_mean_mb, ours.hwm_mb / other.hwm_mb,
                     ours.cpu_s / other.cpu_s if other.cpu_s else "", "", "", "",
                     ours.us_per_sample() / other.us_per_sample(),
                     ours.bytes_per_sample() / other.bytes_per_sample() if other.wire_samples else ""])
    headers = ["process", "RSS mean MB", "VmHWM MB", "CPU s", "CPU % of a core", "series", "samples delivered",
               "µs CPU/sample", "wire B/sample"]
    agent = ours.processes[0]
    cpu_ratio = ours.cpu_s / peers.cpu_s if peers.cpu_s else float("nan")  # nan: never "met"
    verdict = [
        f"window {window_s:.0f} s after a {warmup:.0f} s warm-up ({seconds:.0f} s run); "
        + cpu_source(ours.processes + peers.processes + [p for s in least for p in s.processes]),
        f"agent samples: {ours.samples - ours.self_samples:,} from the host collectors, {ours.self_samples:,} "
        f"self-metrics; µs CPU per host-collector sample: "
        f"{ours.cpu_s * 1e6 / max(1, ours.samples - ours.self_samples):.1f}",
        f"agent RSS: mean {agent.rss_mean_mb:.1f} MB, peak {agent.hwm_mb:.1f} MB (target <= {rss_target:.0f}): "
        + ("met" if agent.hwm_mb <= rss_target else "NOT met"),
        f"agent CPU: {cpu_ratio:.2f}x the peers' (target <= {TOTAL_CPU_TARGET_RATIO}): "
        + ("met" if cpu_ratio <= TOTAL_CPU_TARGET_RATIO else "NOT met")
        + f"; {ours.us_per_sample():.1f} µs per delivered sample",
        f"python floor (bench/python_floor.py: read the files, one fsync'd commit per round, one request and "
        f"one fsync'd cursor commit per 10 s, nothing else): {least[0].us_per_sample():.1f} µs per delivered sample"
        + f"; without fsync: {least[1].us_per_sample():.1f}",
    ]
    return table(headers, rows) + "\n\n" + "\n".join(verdict)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="agent footprint beside node_exporter + vmagent")
    parser.add_argument("--seconds", type=float, default=120.0, help="whole run, warm-up included (>= 60)")
    # Past the agent's first self-metrics collection (at 30 s), which registers its ~120
    # series in the database once: a start-up cost, like the peers' first scrape.
    parser.add_argument("--warmup", type=float, default=40.0)
    parser.add_argument("--quick", action="store_true", help="~20 s run, 5 s warm-up (CI smoke)")
    parser.add_argument("--production", action="store_true",
                        help="the agent uploads over https to nginx (private CA) with a token; RSS target 30 MB")
    args = parser.parse_args(argv)
    seconds, warmup = (20.0, 5.0) if args.quick else (args.seconds, args.warmup)
    if seconds <= warmup + 5:
        parser.error("--seconds must exceed the warm-up by at least 5 s")
    with temp_dir("bench-footprint-") as directory:
        ours, peers, least, window_s = run(seconds, warmup, Path(directory), args.production)
    if args.production:
        print("production configuration: https to nginx (TLS, private CA, bearer token), vm-jsonl")
    print(report(ours, peers, least, window_s, seconds, warmup,
                 PRODUCTION_RSS_TARGET_MB if args.production else RSS_TARGET_MB))
    if not ours.samples or not peers.samples or not all(side.samples for side in least):
        print("nothing delivered by one side", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
