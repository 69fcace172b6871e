"""Bytes on the wire per sample for the default metric set, in each of our formats (seed
``json``, ``vm-jsonl``, ``remote-write``) beside Debian's vmagent (Prometheus remote write:
protobuf + snappy) for the same samples; the CPU each format costs; gzip levels; where the
vm-jsonl bytes go; and what levers outside the encoder would save.

    .venv/bin/python -m bench.bench_wire [--minutes 60] [--vmagent-slices 60] [--agent-seconds 75]
                                         [--quick] [--no-vmagent] [--imports-only]

The samples: the 65-series BELABOX set, each at its collection interval (cpu and network
5 s, memory, disk and thermal 10 s, system 30 s, SRT 1 s) over ``--minutes``, with values as
the collectors make them now (CPU percent and rates rounded to 2 decimals: ``as_collected``)
and timestamps as the collection loop stamps them: the wall clock when the loop wakes up,
shared by every collector due then, mostly on its 1-s grid and sometimes a few ms late
(``wake_up_jitter``, modelled on the agent's CollectionLoop measured on this machine with both
cores saturated: 53 of 61 wake-ups on time, 2 off by 1 ms, 6 by 5 ms).

Ours: request bodies exactly as the uploader builds them (``wire_format(...).body``: the
format's encoding and its own compression), chunked the ways the uploader chunks: online,
one request per upload interval (10 s, the default ``remote.interval``, or 60 s) holding what
was collected since; after an outage, 10,000 samples per request (the default); and the
seed's 50. CPU: ``time.process_time`` of encoding and compressing every request, best of 3
passes (series heads cached, as in the agent), in µs per request and per sample.

vmagent: started on 127.0.0.1 with ``-remoteWrite.url`` pointing at a counting HTTP proxy
of ours in front of a real VictoriaMetrics. The same samples are pushed to vmagent's
``/api/v1/import`` (uncompressed, loopback, not counted); what is counted is the body of
every remote-write request vmagent sends. Online: one push per 10 s slice, each flushed
before the next (the first ``--vmagent-slices`` slices: each waits for a flush); backlog:
the whole range in one push, which vmagent packs into blocks of up to 10,000 samples. Both
runs are checked: VictoriaMetrics must hold every pushed sample. Issue 10's target: ≤ 2
bytes/sample.

Memory: the RSS each way of speaking remote write adds to an interpreter (cramjam, python-
snappy, the protobuf runtime, our encoder), and the real agent run with each format
(``--agent-seconds``; RSS, CPU and bytes per sample of real host metrics on this machine).
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import random
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from belabox_metrics.model import Labels, Sample
from belabox_metrics.upload import remote_write
from belabox_metrics.upload.encode import (
    GZIP_LEVEL,
    VmSeriesHeads,
    WireFormat,
    number,
    vm_jsonl,
    wire_format,
)
from bench._common import (
    REPO_ROOT,
    SeriesModel,
    belabox_series,
    count_settled,
    now_ms,
    table,
    temp_dir,
    timeline,
)

UPLOAD_INTERVAL_MS = 10_000
BACKLOG_CHUNK = 10_000
VMAGENT = "/usr/bin/vmagent"
FLUSH_INTERVAL = "100ms"
DEVICE = "belabox-001"
FORMATS = ("json", "vm-jsonl", "remote-write")


# -- the samples ---------------------------------------------------------------------------
def as_collected(samples: Sequence[Sample], series: Sequence[SeriesModel]) -> list[Sample]:
    """CPU percent and rates rounded to 2 decimals, as cpu.py and host_counters.py do."""
    rounded = {(m.name, m.labels) for m in series if m.kind in ("usage", "rate")}
    return [s._replace(value=round(s.value, 2)) if (s.name, s.labels) in rounded and s.value is not None else s
            for s in samples]


def wake_up_jitter(samples: Sequence[Sample], seed: int = 3) -> list[Sample]:
    """Each collection round's stamp late by 0 ms (85 %), 1 ms (5 %) or 2-8 ms (10 %)."""
    rng = random.Random(seed)
    late: dict[int, int] = {}
    out = []
    for s in samples:
        offset = late.get(s.timestamp_ms)
        if offset is None:
            draw = rng.random()
            offset = late[s.timestamp_ms] = 0 if draw < 0.85 else 1 if draw < 0.90 else rng.randint(2, 8)
        out.append(s._replace(timestamp_ms=s.timestamp_ms + offset))
    return out


def slices_by_interval(samples: Sequence[Sample], interval_ms: int) -> list[list[Sample]]:
    out: dict[int, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.timestamp_ms // interval_ms, []).append(s)
    return [out[k] for k in sorted(out)]


def chunks(samples: Sequence[Sample], size: int) -> list[list[Sample]]:
    return [list(samples[i:i + size]) for i in range(0, len(samples), size)]


def significant(samples: Sequence[Sample], digits: int, keep: Callable[[Sample], bool]) -> list[Sample]:
    """What-if: the values ``keep`` selects rounded to ``digits`` significant digits."""
    return [s._replace(value=float(f"{s.value:.{digits}g}")) if s.value is not None and keep(s) else s
            for s in samples]


# -- measuring -----------------------------------------------------------------------------
@dataclass
class Figures:
    bytes_per_sample: float
    encode_us: float       # per request
    compress_us: float     # per request
    us_per_sample: float   # encode + compress


def measure(fmt: WireFormat, requests: Sequence[Sequence[Sample]], passes: int = 3) -> Figures:
    total = sum(len(r) for r in requests)
    size = sum(len(fmt.body(r, 0)) for r in requests)
    best: tuple[int, int] | None = None
    for _ in range(passes):
        encode_ns = compress_ns = 0
        for r in requests:
            t0 = time.process_time_ns()
            raw = fmt.encode(r, 0)
            t1 = time.process_time_ns()
            fmt.compress(raw)
            encode_ns += t1 - t0
            compress_ns += time.process_time_ns() - t1
        if best is None or encode_ns + compress_ns < sum(best):
            best = (encode_ns, compress_ns)
    assert best is not None
    return Figures(size / total, best[0] / 1000 / len(requests), best[1] / 1000 / len(requests),
                   sum(best) / 1000 / total)


def _ordered_jsonl() -> WireFormat:
    """vm-jsonl with its lines sorted so series with the same timestamp arrays sit together."""
    heads = VmSeriesHeads(DEVICE)

    def encode(samples: Sequence[Sample], now_ms: int) -> bytes:
        grouped: dict[tuple[str, Labels], tuple[list[int], list[float]]] = {}
        for s in samples:
            group = grouped.setdefault((s.name, s.labels), ([], []))
            group[0].append(s.timestamp_ms)
            group[1].append(s.value)  # type: ignore[arg-type]
        items = sorted(grouped.items(), key=lambda kv: (len(kv[1][0]), kv[1][0][0], kv[1][0][-1], kv[0][0]))
        lines = [f'{heads.head(*key)},"values":[{",".join(map(number, values))}],'
                 f'"timestamps":[{",".join(map(str, stamps))}]}}' for key, (stamps, values) in items]
        return ("\n".join(lines) + "\n").encode()

    return WireFormat("vm-jsonl-ordered", "application/x-ndjson", encode)


def _no_device_jsonl() -> WireFormat:
    """vm-jsonl without the device_id label in each line's head."""
    class Heads(VmSeriesHeads):
        def build(self, metric: dict[str, str]) -> str:
            del metric["device_id"]
            return super().build(metric)

    heads = Heads(DEVICE)
    return WireFormat("vm-jsonl-no-device", "application/x-ndjson", lambda samples, now: vm_jsonl(heads, samples))


def wire_bytes(fmt: WireFormat, requests: Sequence[Sequence[Sample]]) -> float:
    return sum(len(fmt.body(r, 0)) for r in requests) / sum(len(r) for r in requests)


def delta_floor(requests: Sequence[Sequence[Sample]]) -> tuple[float, float]:
    """(values, timestamps) in bytes per sample for a stateful-style encoding of the same
    requests, as an estimate of what the data carries: per series, values as integers at
    their finest decimal exponent (12 significant digits), delta-coded; timestamps as
    delta-of-delta; zig-zag varints; zlib level 9. No series names or labels counted."""
    def varint(value: int) -> bytes:
        return remote_write.varint((value << 1) ^ (value >> 63))  # zig-zag first

    values_bytes = stamp_bytes = 0
    for request in requests:
        grouped: dict[object, list[Sample]] = {}
        for s in request:
            grouped.setdefault((s.name, s.labels), []).append(s)
        values_out, stamps_out = bytearray(), bytearray()
        for group in grouped.values():
            decimals = [Decimal(number(s.value)) for s in group]  # type: ignore[arg-type]
            exponent = min(int(d.as_tuple().exponent) for d in decimals)
            previous = 0
            for d in decimals:
                scaled = int(d.scaleb(-exponent))
                values_out += varint(scaled - previous)
                previous = scaled
            previous_ts = previous_delta = 0
            for index, s in enumerate(group):
                delta = s.timestamp_ms - previous_ts
                stamps_out += varint(s.timestamp_ms if index == 0 else delta - previous_delta)
                previous_ts, previous_delta = s.timestamp_ms, (delta if index else 0)
        values_bytes += len(zlib.compress(bytes(values_out), 9))
        stamp_bytes += len(zlib.compress(bytes(stamps_out), 9))
    total = sum(len(r) for r in requests)
    return values_bytes / total, stamp_bytes / total


class CountingProxy:
    """Forwards POSTs to ``target`` and counts request bodies, on 127.0.0.1."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.bytes = 0
        self.requests = 0
        self.last_request = 0.0
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with proxy.lock:
                    proxy.bytes += len(body)
                    proxy.requests += 1
                    proxy.last_request = time.monotonic()
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request("POST", self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                self.send_response(answer.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.bytes, self.requests

    def wait_quiet(self, requests_before: int, quiet_s: float, timeout_s: float = 30.0) -> None:
        """Until at least one request arrived after ``requests_before`` and none for ``quiet_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                seen, last = self.requests, self.last_request
            if seen > requests_before and time.monotonic() - last >= quiet_s:
                return
            time.sleep(0.02)
        raise TimeoutError("vmagent sent nothing")


def push(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


# -- memory: what each way of speaking remote write costs -----------------------------------
_PROTOBUF_WRITE_REQUEST = """
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
F = descriptor_pb2.FieldDescriptorProto
fd = descriptor_pb2.FileDescriptorProto(name="rw.proto", package="prometheus", syntax="proto3")
m = fd.message_type.add(name="Label")
m.field.add(name="name", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
m.field.add(name="value", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
m = fd.message_type.add(name="Sample")
m.field.add(name="value", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
m.field.add(name="timestamp", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
m = fd.message_type.add(name="TimeSeries")
m.field.add(name="labels", number=1, type=F.TYPE_MESSAGE, type_name=".prometheus.Label", label=F.LABEL_REPEATED)
m.field.add(name="samples", number=2, type=F.TYPE_MESSAGE, type_name=".prometheus.Sample", label=F.LABEL_REPEATED)
m = fd.message_type.add(name="WriteRequest")
m.field.add(name="timeseries", number=1, type=F.TYPE_MESSAGE, type_name=".prometheus.TimeSeries",
            label=F.LABEL_REPEATED)
pool = descriptor_pool.DescriptorPool()
pool.Add(fd)
request = message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))()
series = request.timeseries.add()
series.labels.add(name="__name__", value="x")
series.samples.add(value=1.5, timestamp=1000)
assert series.SerializeToString()
"""
# (what, module that must be installed, code measured, code run before measuring)
IMPORT_PROBES = (
    ("cramjam: import", "cramjam", "import cramjam", ""),
    ("cramjam: import + one snappy block", "cramjam", "import cramjam; cramjam.snappy.compress_raw(b'x' * 1000)",
     ""),
    ("python-snappy (a wrapper of cramjam since 0.7): import + one block", "snappy",
     "import snappy; snappy.compress(b'x' * 1000)", ""),
    ("protobuf: runtime + a WriteRequest class built at run time, one message", "google.protobuf",
     _PROTOBUF_WRITE_REQUEST, ""),
    ("ours: upload.remote_write + one request encoded (no cramjam), after upload.encode", "belabox_metrics",
     "from belabox_metrics.upload import remote_write as rw\n"
     "rw.write_request(rw.RemoteWriteSeries('b'), [Sample('x', 1.5, 1000, make_labels(a='b'))])",
     "from belabox_metrics.upload import encode\nfrom belabox_metrics.model import Sample, make_labels"),
)
# VmRSS before and after running the probe in a fresh interpreter that already holds what
# the agent always imports (json, gzip, zlib, and the probe's setup).
_PROBE = """
import gzip, importlib.util, json, sys, zlib
def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
try:
    found = importlib.util.find_spec(sys.argv[1]) is not None
except ImportError:  # google.protobuf without google
    found = False
if not found:
    print("missing")
    raise SystemExit
exec(sys.argv[3])
before = rss()
exec(sys.argv[2])
print(rss() - before)
"""


def import_costs() -> list[list[object]]:
    rows: list[list[object]] = []
    for label, module, code, setup in IMPORT_PROBES:
        runs = []
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", _PROBE, module, code, setup], capture_output=True, text=True,
                                 check=True, cwd=REPO_ROOT).stdout.strip()
            if out == "missing":
                break
            runs.append(int(out) / 1024)
        version = _version(module.split(".")[0] if module != "google.protobuf" else "protobuf")
        rows.append([label, version, f"+{min(runs):.2f}" if runs else "not installed"])
    return rows


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version({"snappy": "python-snappy"}.get(distribution, distribution))
    except PackageNotFoundError:
        return "-"


def agent_runs(seconds: float, warmup: float = 15.0) -> list[list[object]]:
    """The real agent (configs/config.yaml's host collectors, as bench_footprint runs it)
    with each format against a real VictoriaMetrics: RSS, CPU and bytes per sample from its
    own /metrics, over the window after the warm-up."""
    from tests.helpers import free_port
    from tests.vm import VictoriaMetrics, vm_available

    from bench.bench_footprint import (
        default_config,
        prom_value,
        run_ns,
        start_agent,
        status_kb,
        stop,
        wait_http,
    )

    binary = vm_available()
    if binary is None:
        raise RuntimeError("victoria-metrics not installed (Debian package victoria-metrics)")
    rows: list[list[object]] = []
    with temp_dir("bench-wire-agent-") as directory:
        workdir = Path(directory)
        vm = VictoriaMetrics(binary, workdir / "vm", free_port())
        vm.start()
        try:
            for fmt, path in (("vm-jsonl", "/api/v1/import"), ("remote-write", "/api/v1/write")):
                port = free_port()
                config = default_config(workdir, f"wire-agent-{fmt}", vm.url + path, port,
                                        extra={"remote": {"format": fmt}})
                agent = start_agent(config, workdir / f"{fmt}.log")
                try:
                    metrics = f"http://127.0.0.1:{port}/metrics"
                    wait_http(metrics, proc=agent)
                    time.sleep(warmup)
                    cpu0, sent0 = run_ns(agent.pid)[0], prom_value(metrics, "uploader_bytes_sent_total")
                    count0 = prom_value(metrics, "uploader_metrics_uploaded_total")
                    rss = []
                    deadline = time.monotonic() + seconds - warmup
                    while time.monotonic() < deadline:
                        rss.append(status_kb(agent.pid, "VmRSS"))
                        time.sleep(1.0)
                    cpu = (run_ns(agent.pid)[0] - cpu0) / 1e9
                    sent = prom_value(metrics, "uploader_bytes_sent_total") - sent0
                    count = prom_value(metrics, "uploader_metrics_uploaded_total") - count0
                    rows.append([fmt, sum(rss) / len(rss) / 1024, status_kb(agent.pid, "VmHWM") / 1024,
                                 cpu * 1000 / (seconds - warmup) * 60, int(count), sent / max(count, 1)])
                finally:
                    stop(agent)
        finally:
            vm.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bytes on the wire per sample, per format, beside vmagent")
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--vmagent-slices", type=int, default=60,
                        help="10 s slices pushed one by one to vmagent (each waits for a flush)")
    parser.add_argument("--quick", action="store_true", help="CI mode: 10 minutes, 12 slices")
    parser.add_argument("--no-vmagent", action="store_true", help="our formats only (no VictoriaMetrics needed)")
    parser.add_argument("--agent-seconds", type=float, default=75.0,
                        help="run the real agent this long per format (15 s warm-up); 0: skip")
    parser.add_argument("--imports-only", action="store_true",
                        help="only the import RSS table (run it with any interpreter that has the packages)")
    args = parser.parse_args(argv)
    if args.imports_only:
        print(table(["what", "version", "RSS MB"], import_costs()))
        return 0
    minutes, slice_count = (10, 12) if args.quick else (args.minutes, args.vmagent_slices)
    series = belabox_series()
    # Recent (VictoriaMetrics keeps it), and the same millisecond part every run: repeatable sizes.
    start = (now_ms() // 1000 - minutes * 60) * 1000 + 123
    on_grid = as_collected(timeline(series, minutes * 60, start), series)
    samples = wake_up_jitter(on_grid)
    n = len(samples)
    online = slices_by_interval(samples, UPLOAD_INTERVAL_MS)
    backlog = chunks(samples, BACKLOG_CHUNK)
    print(f"{len(series)} series, {minutes} min, {n:,} samples; online: {len(online)} requests of "
          f"~{n // len(online)} samples; backlog: {len(backlog)} requests of {BACKLOG_CHUNK:,}", flush=True)

    # 1. Formats.
    rows: list[list[object]] = []
    figures: dict[str, tuple[Figures, Figures]] = {}
    for name, level in [("json", None), ("vm-jsonl", 1), ("vm-jsonl", None), ("remote-write", None)]:
        fmt = wire_format(name, DEVICE, level)
        label = f"{name} (gzip {level or GZIP_LEVEL})" if name != "remote-write" else f"{name} (snappy)"
        on, back = measure(fmt, online), measure(fmt, backlog)
        if level is None:
            figures[name] = (on, back)
        rows.append([label, on.bytes_per_sample, wire_bytes(fmt, slices_by_interval(samples, 60_000)),
                     back.bytes_per_sample, wire_bytes(fmt, chunks(samples, 50)),
                     f"{on.encode_us + on.compress_us:.0f} ({on.us_per_sample:.2f}/sample)",
                     f"{(back.encode_us + back.compress_us) / 1000:.1f} ({back.us_per_sample:.2f}/sample)"])
    print(f"\n1. bytes on the wire per sample (request bodies) and CPU, {n:,} samples of {len(series)} series over "
          f"{minutes} min\n")
    print(table(["format", "online 10 s", "online 60 s", "backlog 10k", "chunk 50", "CPU µs per online request",
                 "CPU ms per backlog request"], rows))

    # 2. gzip levels (vm-jsonl).
    rows = []
    base: tuple[float, float] | None = None
    for level in range(1, 10):
        fmt = wire_format("vm-jsonl", DEVICE, level)
        on, back = measure(fmt, online), measure(fmt, backlog)
        base = base or (on.bytes_per_sample, back.bytes_per_sample)
        rows.append([level, on.bytes_per_sample, f"{on.bytes_per_sample / base[0] - 1:+.0%}", on.compress_us,
                     back.bytes_per_sample, f"{back.bytes_per_sample / base[1] - 1:+.0%}", back.compress_us / 1000,
                     back.compress_us / BACKLOG_CHUNK, back.encode_us / 1000])
    print("\n2. vm-jsonl at each gzip level: bytes per sample and compression CPU (encoding JSON is the same for all)\n")
    print(table(["level", "online B/sample", "vs 1", "gzip µs per online request", "backlog B/sample", "vs 1",
                 "gzip ms per backlog request", "gzip µs per sample", "encode ms per backlog request"], rows))

    # 3. Where the vm-jsonl bytes go.
    fmt = wire_format("vm-jsonl", DEVICE)
    rows = []
    for label, requests in (("online 10 s", online), ("backlog 10k", backlog)):
        full = wire_bytes(fmt, requests)
        no_values = wire_bytes(fmt, [[s._replace(value=0.0) for s in r] for r in requests])
        no_stamps = wire_bytes(fmt, [[s._replace(timestamp_ms=1) for s in r] for r in requests])
        neither = wire_bytes(fmt, [[s._replace(value=0.0, timestamp_ms=1) for s in r] for r in requests])
        rows.append([label, full, full - no_values, full - no_stamps, neither])
    print(f"\n3. where the vm-jsonl bytes go (gzip {GZIP_LEVEL}): what each part costs, measured as what "
          "replacing it by a constant saves\n")
    print(table(["chunking", "B/sample", "values", "timestamps", "left: series heads, JSON syntax"], rows))

    # 4. Levers outside the encoder: what-ifs on the samples.
    kinds = {(m.name, m.labels): m.kind for m in series}

    def kind(s: Sample) -> str:
        return kinds[(s.name, s.labels)]

    levers = [
        ("as collected (the rows above)", samples),
        ("timestamps exactly on the grid (no wake-up jitter)", on_grid),
        ("timestamps on whole wall-clock seconds (.000)", [s._replace(timestamp_ms=s.timestamp_ms // 1000 * 1000)
                                                           for s in on_grid]),
        ("rates to 3 significant digits", significant(samples, 3, lambda s: kind(s) == "rate")),
        ("SRT loss percent to 2 decimals", [s._replace(value=round(s.value, 2)) if kind(s) == "ratio" and s.value
                                            is not None else s for s in samples]),
        ("both of the last two", significant([s._replace(value=round(s.value, 2)) if kind(s) == "ratio" and s.value
                                              is not None else s for s in samples], 3, lambda s: kind(s) == "rate")),
        ("no *_per_second series (PromQL rate() of the counters)", [s for s in samples if kind(s) != "rate"]),
        ("no *_per_second series, SRT loss percent to 2 decimals",
         [s._replace(value=round(s.value, 2)) if kind(s) == "ratio" and s.value is not None else s
          for s in samples if kind(s) != "rate"]),
        # The shipped config's set: host collectors only (SRT needs a source configured).
        ("host metrics only (configs/config.yaml: no SRT)", [s for s in samples if not s.name.startswith("srt.")]),
        ("host metrics only, rates to 3 significant digits",
         significant([s for s in samples if not s.name.startswith("srt.")], 3, lambda s: kind(s) == "rate")),
    ]
    rows = []
    jsonl, remote = wire_format("vm-jsonl", DEVICE), wire_format("remote-write", DEVICE)
    for label, variant in levers:
        on_requests, back_requests = slices_by_interval(variant, UPLOAD_INTERVAL_MS), chunks(variant, BACKLOG_CHUNK)
        back = wire_bytes(jsonl, back_requests)
        rows.append([label, wire_bytes(jsonl, on_requests), back, back * len(variant) / 1024 / (minutes / 60),
                     wire_bytes(remote, on_requests), wire_bytes(remote, back_requests)])
    print(f"\n4. levers outside the encoder (what-ifs on the samples): bytes per sample, vm-jsonl gzip {GZIP_LEVEL} "
          "and remote-write\n")
    print(table(["samples", "vm-jsonl online", "vm-jsonl backlog", "vm-jsonl backlog KiB/h", "remote-write online",
                 "remote-write backlog"], rows))

    # 4b. Encoder what-ifs, not adopted.
    rows = []
    for label, fmt in (("vm-jsonl as sent (lines in first-seen order)", jsonl),
                       ("lines ordered by their timestamps (same arrays side by side)", _ordered_jsonl()),
                       ("device_id left out of each line (extra_label on the URL instead)", _no_device_jsonl())):
        rows.append([label, wire_bytes(fmt, online), wire_bytes(fmt, backlog)])
    print(f"\n4b. encoder what-ifs (vm-jsonl, gzip {GZIP_LEVEL}), not adopted: bytes per sample\n")
    print(table(["encoding", "online 10 s", "backlog 10k"], rows))

    # 5. What the data carries.
    rows = []
    for label, requests in (("online 10 s", online), ("backlog 10k", backlog)):
        values, stamps = delta_floor(requests)
        rows.append([label, values, stamps, values + stamps])
    print("\n5. what the data carries: per-series delta coding + zlib 9 (values as decimal integers, timestamps "
          "delta-of-delta; no names or labels)\n")
    print(table(["chunking", "values B/sample", "timestamps B/sample", "sum"], rows))

    print("\n7. memory: what speaking remote write costs (VmRSS growth in a fresh interpreter, best of 3)\n")
    print(table(["what", "version", "RSS MB"], import_costs()))

    if args.no_vmagent:
        return 0
    if args.agent_seconds > 0 and not args.quick:
        print(f"\n8. the real agent with each format, {args.agent_seconds:.0f} s each (15 s warm-up), host "
              "collectors of configs/config.yaml on this machine, uploads every 10 s\n", flush=True)
        print(table(["format", "RSS mean MB", "VmHWM MB", "CPU ms per minute", "samples uploaded",
                     "wire B/sample"], agent_runs(args.agent_seconds)))
    vmagent = _run_vmagent(online[:slice_count], samples)
    if vmagent is None:
        return 2
    agent_online, agent_backlog = vmagent
    same = online[:slice_count]
    rows = []
    for name in FORMATS:
        fmt = wire_format(name, DEVICE)
        ours_same = wire_bytes(fmt, same)
        rows.append([f"ours, {name}", ours_same, f"{agent_online / ours_same:.1f}x smaller",
                     figures[name][1].bytes_per_sample, f"{agent_backlog / figures[name][1].bytes_per_sample:.1f}x smaller"])
    rows.append(["vmagent (remote write)", agent_online, "", agent_backlog, ""])
    print(f"\n6. beside vmagent: online = the first {slice_count} 10 s slices, flushed one by one; backlog = "
          "all at once (vmagent: blocks of <= 10,000; ours: 10,000 per request)\n")
    print(table(["sender", "online B/sample", "vs vmagent", "backlog B/sample", "vs vmagent"], rows))
    jsonl_on, jsonl_back = figures["vm-jsonl"]
    print(f"\ntarget <= 2 bytes/sample: vm-jsonl online {jsonl_on.bytes_per_sample:.2f}, "
          f"backlog {jsonl_back.bytes_per_sample:.2f}")
    return 0


def _run_vmagent(online: list[list[Sample]], everything: list[Sample]) -> tuple[float, float] | None:
    from tests.helpers import free_port, wait_for_port
    from tests.vm import VictoriaMetrics, vm_available

    binary = vm_available()
    if binary is None or not Path(VMAGENT).exists():
        print("victoria-metrics / vmagent not installed (Debian package victoria-metrics)", file=sys.stderr)
        return None
    with temp_dir("bench-wire-") as directory:
        vm = VictoriaMetrics(binary, Path(directory) / "vm", free_port())
        vm.start()
        agent: subprocess.Popen[bytes] | None = None
        try:
            with CountingProxy(vm.port) as proxy:
                port = free_port()
                log = (Path(directory) / "vmagent.log").open("ab")
                agent = subprocess.Popen(
                    [VMAGENT, f"-httpListenAddr=127.0.0.1:{port}",
                     f"-remoteWrite.url=http://127.0.0.1:{proxy.port}/api/v1/write",
                     f"-remoteWrite.tmpDataPath={Path(directory) / 'vmagent-data'}",
                     f"-remoteWrite.flushInterval={FLUSH_INTERVAL}", "-loggerLevel=ERROR"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
                wait_for_port("127.0.0.1", port, proc=agent)
                import_url = f"http://127.0.0.1:{port}/api/v1/import"

                online_fmt = wire_format("vm-jsonl", "wire-vmagent-online")
                start_bytes, _ = proxy.snapshot()
                for part in online:
                    _, before = proxy.snapshot()
                    push(import_url, online_fmt.encode(part, 0))
                    proxy.wait_quiet(before, quiet_s=0.3)
                online_bytes = proxy.snapshot()[0] - start_bytes
                online_count = sum(len(part) for part in online)

                backlog_fmt = wire_format("vm-jsonl", "wire-vmagent-backlog")
                start_bytes, before = proxy.snapshot()
                push(import_url, backlog_fmt.encode(everything, 0))
                proxy.wait_quiet(before, quiet_s=1.0)
                backlog_bytes = proxy.snapshot()[0] - start_bytes

                for device_id, expected in (("wire-vmagent-online", online_count),
                                            ("wire-vmagent-backlog", len(everything))):
                    held = count_settled(vm, device_id, expected)[1]
                    if held != expected:
                        raise RuntimeError(f"VictoriaMetrics holds {held} of {expected} samples sent by vmagent")
        finally:
            if agent is not None:
                agent.terminate()
                agent.wait(timeout=20)
            vm.stop()
    return online_bytes / online_count, backlog_bytes / len(everything)


if __name__ == "__main__":
    raise SystemExit(main())
