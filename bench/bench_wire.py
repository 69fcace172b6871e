"""Bytes on the wire per sample for the default metric set, ours (vm-jsonl, gzip level 1)
beside Debian's vmagent (Prometheus remote write: protobuf + snappy) for the same samples.

    .venv/bin/python -m bench.bench_wire [--minutes 60] [--vmagent-slices 60] [--quick]

The samples: the 65-series BELABOX set, each at its collection interval (cpu and network
5 s, memory, disk and thermal 10 s, system 30 s, SRT 1 s) over ``--minutes``.

Ours: request bodies exactly as the uploader builds them (``wire_format("vm-jsonl")`` +
``gzip_bytes``), chunked the ways the uploader chunks: online, one request per upload
interval (10 s, the default ``remote.interval``) holding what was collected since; after an
outage, 10,000 samples per request (the default); and the seed's 50.

vmagent: started on 127.0.0.1 with ``-remoteWrite.url`` pointing at a counting HTTP proxy
of ours in front of a real VictoriaMetrics. The same samples are pushed to vmagent's
``/api/v1/import`` (uncompressed, loopback, not counted); what is counted is the body of
every remote-write request vmagent sends. Online: one push per 10 s slice, each flushed
before the next (the first ``--vmagent-slices`` slices: each waits for a flush); backlog:
the whole range in one push, which vmagent packs into blocks of up to 10,000 samples. Both
runs are checked: VictoriaMetrics must hold every pushed sample. Target ≤ 3 bytes/sample.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from belabox_metrics.model import Sample
from belabox_metrics.upload.encode import gzip_bytes, wire_format
from bench._common import REPO_ROOT, belabox_series, count_settled, now_ms, table, temp_dir, timeline

UPLOAD_INTERVAL_MS = 10_000
VMAGENT = "/usr/bin/vmagent"
FLUSH_INTERVAL = "100ms"


def slices_by_interval(samples: Sequence[Sample], interval_ms: int) -> list[list[Sample]]:
    out: dict[int, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.timestamp_ms // interval_ms, []).append(s)
    return [out[k] for k in sorted(out)]


def chunks(samples: Sequence[Sample], size: int) -> list[list[Sample]]:
    return [list(samples[i:i + size]) for i in range(0, len(samples), size)]


def our_bytes(requests: Sequence[Sequence[Sample]], device_id: str) -> int:
    fmt = wire_format("vm-jsonl", device_id)
    return sum(len(gzip_bytes(fmt.encode(r, 0))) for r in requests)


def significant(samples: Sequence[Sample], digits: int = 6) -> list[Sample]:
    """What-if: non-integral values rounded to ``digits`` significant digits."""
    return [s._replace(value=float(f"{s.value:.{digits}g}")) if s.value is not None and not s.value.is_integer()
            else s for s in samples]


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bytes on the wire per sample, ours beside vmagent")
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--vmagent-slices", type=int, default=60,
                        help="10 s slices pushed one by one to vmagent (each waits for a flush)")
    parser.add_argument("--quick", action="store_true", help="CI mode: 10 minutes, 12 slices")
    args = parser.parse_args(argv)
    minutes, slice_count = (10, 12) if args.quick else (args.minutes, args.vmagent_slices)
    series = belabox_series()
    samples = timeline(series, minutes * 60, now_ms() - minutes * 60_000)
    online = slices_by_interval(samples, UPLOAD_INTERVAL_MS)
    rounded = significant(samples)
    n = len(samples)
    print(f"{len(series)} series, {minutes} min, {n:,} samples; online: {len(online)} requests of "
          f"~{n // len(online)} samples", flush=True)

    ours = {
        "online (10 s)": our_bytes(online, "wire-ours") / n,
        "online (60 s)": our_bytes(slices_by_interval(samples, 60_000), "wire-ours") / n,
        "backlog 10k": our_bytes(chunks(samples, 10_000), "wire-ours") / n,
        "seed chunk 50": our_bytes(chunks(samples, 50), "wire-ours") / n,
        "online (10 s), 6 significant digits": our_bytes(slices_by_interval(rounded, UPLOAD_INTERVAL_MS),
                                                         "wire-ours") / n,
        "backlog 10k, 6 significant digits": our_bytes(chunks(rounded, 10_000), "wire-ours") / n,
    }
    pushed_online = [s for part in online[:slice_count] for s in part]
    ours_same_slices = our_bytes(online[:slice_count], "wire-ours") / len(pushed_online)

    vmagent = _run_vmagent(online[:slice_count], samples)
    if vmagent is None:
        return 2
    agent_online, agent_backlog = vmagent

    rows: list[list[object]] = [
        ["ours", "online: one request per 10 s", ours["online (10 s)"], ""],
        ["ours", f"online, the {slice_count} slices vmagent got", ours_same_slices, ""],
        ["vmagent", f"online: the same {slice_count} slices, flushed one by one", agent_online,
         f"ours {agent_online / ours_same_slices:.1f}x smaller"],
        ["ours", "online: one request per 60 s (remote.interval: 60s)", ours["online (60 s)"], ""],
        ["ours", "backlog: 10,000 per request", ours["backlog 10k"], ""],
        ["vmagent", "backlog: all pushed at once (blocks of <= 10,000)", agent_backlog,
         f"ours {agent_backlog / ours['backlog 10k']:.1f}x smaller"],
        ["ours", "seed chunk: 50 per request", ours["seed chunk 50"], ""],
        ["ours (what-if)", "online, values to 6 significant digits", ours["online (10 s), 6 significant digits"], ""],
        ["ours (what-if)", "backlog 10k, values to 6 significant digits", ours["backlog 10k, 6 significant digits"],
         ""],
    ]
    print(f"\nbytes on the wire per sample (request bodies), {n:,} samples of {len(series)} series over "
          f"{minutes} min\n")
    print(table(["sender", "chunking", "bytes/sample", "ratio"], rows))
    print(f"\ntarget <= 3 bytes/sample: online {ours['online (10 s)']:.2f}, backlog {ours['backlog 10k']:.2f}")
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
