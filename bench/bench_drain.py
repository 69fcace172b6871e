"""Backlog drain: 1,000,000 stored samples sent to a real VictoriaMetrics on loopback by
``Uploader.run_cycle`` with ``HttpTransport`` (vm-jsonl, gzip at the default
``remote.compression_level``), then counted back.

    .venv/bin/python -m bench.bench_drain [--samples 1000000] [--quick] [--no-scale]

Runs, each against the same VictoriaMetrics (127.0.0.1, free port, temp dir,
-dedup.minScrapeInterval=1ms) under its own device_id:
- chunk 10,000 (the default) with the 65-series BELABOX set;
- chunk 50 (the seed's chunk), the peer, bounded to ``--peer-seconds`` of draining;
- chunk 10,000 with 10x and 100x the series at the same sample total.

Each backlog is built by a child process and each drain runs in a fresh child process, so
the RSS growth (VmRSS sampled every 50 ms, and VmHWM, minus VmRSS before the first cycle)
is the drain's alone. The uploader's info logs are off. Then VictoriaMetrics' export must
hold exactly the acknowledged samples. Targets: ≥ 500k samples/s, RSS growth ≤ 20 MB.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from belabox_metrics.clock import SystemClock
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import HttpTransport
from belabox_metrics.upload.uploader import Uploader, UploadPolicy
from bench._common import (
    REPO_ROOT,
    RssSampler,
    belabox_series,
    count_settled,
    now_ms,
    rounds,
    status_kb,
    table,
    temp_dir,
)

BUILD_BATCH = 10_000


def build_backlog(path: str, total: int, copies: int) -> None:
    """A queue holding ``total`` unsent samples ending now, as the collection loop stored them."""
    queue = SampleQueue.open(path)
    queue.conn.execute("PRAGMA synchronous=NORMAL")  # setup, not measured
    series = belabox_series(copies)
    pending = []
    for batch in rounds(series, total, now_ms() - (total // len(series) + 1) * 1000):
        pending.extend(batch)
        if len(pending) >= BUILD_BATCH:
            queue.append(pending)
            pending = []
    if pending:
        queue.append(pending)
    queue.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    queue.close()


def drain(path: str, url: str, device_id: str, chunk: int, budget_s: float) -> dict[str, float]:
    """Run upload cycles until the queue is empty or ``budget_s`` passes; figures as a dict."""
    log = logging.getLogger("bench.drain")
    log.setLevel(logging.WARNING)
    queue = SampleQueue.open(path)
    transport = HttpTransport(timeout=30)
    uploader = Uploader(queue, transport, url=url, fmt=wire_format("vm-jsonl", device_id), clock=SystemClock(),
                        log=log, policy=UploadPolicy(max_samples=chunk, max_batches_per_cycle=1000))
    deadline = time.monotonic() + budget_s
    acknowledged = 0
    with RssSampler(0.05) as rss:
        started = time.perf_counter()
        while time.monotonic() < deadline:
            result = uploader.run_cycle(deadline=deadline)
            acknowledged += result.acknowledged
            if result.error is not None:
                raise RuntimeError(f"upload failed: {result.error}")
            if result.batches == 0:
                break
        seconds = time.perf_counter() - started
    left = queue.pending_count(uploader.destination)
    transport.close()
    queue.close()
    return {"acknowledged": acknowledged, "seconds": seconds, "bytes": uploader.bytes_sent_total,
            "requests": uploader.requests_total, "rss_before_kb": rss.before_kb, "rss_peak_kb": rss.peak_kb,
            "hwm_kb": status_kb("VmHWM"), "pending_after": left}


@dataclass
class DrainRun:
    label: str
    series: int
    chunk: int
    samples: int
    figures: dict[str, float]
    in_vm: int = -1
    in_vm_first: int = -1
    settle_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.figures["acknowledged"] / self.figures["seconds"]

    @property
    def wire_bytes_per_sample(self) -> float:
        return self.figures["bytes"] / max(1, self.figures["acknowledged"])

    @property
    def rss_growth_mb(self) -> float:
        return (self.figures["rss_peak_kb"] - self.figures["rss_before_kb"]) / 1024

    @property
    def hwm_growth_mb(self) -> float:
        return (self.figures["hwm_kb"] - self.figures["rss_before_kb"]) / 1024


def _child(*args: str) -> str:
    answer = subprocess.run([sys.executable, "-m", "bench.bench_drain", *args], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600, check=False)
    if answer.returncode != 0:
        raise RuntimeError(f"child {args[:2]} failed: {answer.stderr[-2000:]}")
    return answer.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="backlog drain to a real VictoriaMetrics on loopback")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="CI mode: 50,000 samples")
    parser.add_argument("--peer-seconds", type=float, default=20.0, help="time bound of the chunk-50 drain")
    parser.add_argument("--no-scale", action="store_true", help="skip the 10x/100x series runs")
    parser.add_argument("--build", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--drain", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--copies", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--device-id", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=10_000, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=300.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    total = 50_000 if args.quick else args.samples
    if args.build:
        build_backlog(args.build, total, args.copies)
        return 0
    if args.drain:
        print(json.dumps(drain(args.drain, args.url, args.device_id, args.chunk, args.budget)))
        return 0

    from tests.helpers import free_port
    from tests.vm import VictoriaMetrics, vm_available

    binary = vm_available()
    if binary is None:
        print("victoria-metrics is not installed (Debian package victoria-metrics)", file=sys.stderr)
        return 2
    plan = [("default", 1, 10_000, 300.0), ("seed chunk", 1, 50, args.peer_seconds)]
    if not args.no_scale:
        plan += [("10x series", 10, 10_000, 300.0), ("100x series", 100, 10_000, 300.0)]
    runs: list[DrainRun] = []
    started = time.monotonic()
    with temp_dir("bench-drain-") as directory:
        vm = VictoriaMetrics(binary, REPO_ROOT.joinpath(directory, "vm"), free_port())
        vm.start()
        try:
            for index, (label, copies, chunk, budget) in enumerate(plan):
                path = os.path.join(directory, f"backlog-{index}.db")
                _child("--build", path, "--samples", str(total), "--copies", str(copies))
                device_id = f"drain-{index}"
                figures = json.loads(_child("--drain", path, "--url", vm.import_url, "--device-id", device_id,
                                            "--chunk", str(chunk), "--budget", str(budget)))
                run = DrainRun(label, len(belabox_series(copies)), chunk, total, figures)
                run.in_vm_first, run.in_vm, run.settle_s = count_settled(vm, device_id,
                                                                         int(figures["acknowledged"]))
                runs.append(run)
                os.remove(path)
                print(f"  {label:12} chunk {chunk:6,}: {run.rate:10,.0f} samples/s, "
                      f"{run.wire_bytes_per_sample:5.2f} B/sample on the wire, RSS +{run.rss_growth_mb:.1f} MB, "
                      f"VM holds {run.in_vm:,} of {int(figures['acknowledged']):,} acknowledged "
                      f"(first export: {run.in_vm_first:,}; {run.settle_s:.1f} s)", flush=True)
        finally:
            vm.stop()

    print(f"\nbacklog drain to VictoriaMetrics on loopback, {total:,} samples per backlog, "
          f"{time.monotonic() - started:.0f} s in all\n")
    default = runs[0]
    rows: list[list[object]] = []
    for run in runs:
        rows.append([run.label, run.series, run.chunk, int(run.figures["acknowledged"]), run.rate,
                     f"{run.rate / runs[1].rate:.1f}x" if run is not runs[1] else "1x",
                     run.wire_bytes_per_sample, int(run.figures["requests"]),
                     f"{run.rss_growth_mb:.1f}", f"{run.hwm_growth_mb:.1f}",
                     ("exact" if run.in_vm == run.figures["acknowledged"] else f"MISMATCH {run.in_vm:,}")
                     + ("" if run.in_vm_first == run.in_vm else f" (first export {run.in_vm_first:,})")])
    print(table(["run", "series", "chunk", "drained", "samples/s", "vs chunk 50", "wire B/sample",
                 "requests", "RSS growth MB", "HWM growth MB", "VM export count"], rows))
    ok = all(run.in_vm == run.figures["acknowledged"] for run in runs) and default.in_vm == total
    print(f"\ntargets: drain >= 500,000 samples/s: {default.rate:,.0f}; RSS growth <= 20 MB: "
          f"{default.rss_growth_mb:.1f} MB; VM holds exactly {total:,}: {'yes' if default.in_vm == total else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
