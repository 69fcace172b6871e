"""Where the agent's CPU goes at the default config: per thread, per part, per SQL statement.

    .venv/bin/python -m bench.bench_cpu_parts [--seconds 60] [--warmup 40] [--trace-sql] [--sync normal] [--quick]
        [--scale N] [--profile FILE]

The real agent (``Agent.run`` in this process, configs/config.yaml's host collectors as
bench_footprint runs them, thermal mocked where there is no zone) uploads vm-jsonl to a real
VictoriaMetrics on loopback. Over the window after the warm-up it reports:

- CPU per thread (``/proc/self/task/TID/schedstat``, ns), per minute;
- CPU of each part (``time.thread_time_ns`` around the methods below: a collector run, the
  store's append, one upload cycle and its claim / request / acknowledgement, the stats
  refresh, housekeeping, self-metrics), per minute and per call. Parts nest (a cycle holds
  its claim, request and acknowledgement), so they do not add up;
- CPU of Python's cyclic garbage collector per generation (``gc.callbacks``, in whichever
  thread's allocation triggered it; it nests inside the parts above);
- with ``--trace-sql``, SQL statements per minute per thread
  (``sqlite3.Connection.set_trace_callback``; the callback itself costs CPU, so the figures
  above are best read from a run without it);
- with ``--sync normal``, the same with ``PRAGMA synchronous=NORMAL`` (no fsync per commit):
  a what-if that measures the fsyncs' share, not a setting the agent offers;
- with ``--profile FILE``, cProfile in every agent thread (warm-up included: it cannot be
  started in another thread), the functions of the agent with the most cumulative time, and
  the merged statistics in FILE (``python -m pstats FILE``). cProfile makes Python-level
  calls several times dearer, so read it for where time goes, not for how much.

It is a profile, not a peer comparison: bench_footprint has the figures against
node_exporter + vmagent. The wrappers cost ~1 µs per call, a few hundred calls a minute.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import functools
import gc
import pstats
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import belabox_metrics.agent as agent_module
import belabox_metrics.store.queue as queue_module
from belabox_metrics.config import load_config
from belabox_metrics.runtime.collection import CollectionLoop
from belabox_metrics.runtime.housekeeping import Housekeeping
from belabox_metrics.runtime.queue_figures import QueueFigures
from belabox_metrics.runtime.upload_loop import UploadLoop
from belabox_metrics.selfmetrics import SelfMetricsCollector
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.transport import HttpTransport
from belabox_metrics.upload.uploader import Uploader
from bench._common import table, temp_dir

PARTS: tuple[tuple[type, str], ...] = (
    (CollectionLoop, "run_due"),
    (CollectionLoop, "collect_one"),
    (SampleQueue, "append"),
    (SelfMetricsCollector, "collect"),
    (Uploader, "run_cycle"),
    (SampleQueue, "next_claims"),
    (HttpTransport, "post"),
    (SampleQueue, "ack_claims"),
    (QueueFigures, "refresh"),
    (Housekeeping, "run"),
    (UploadLoop, "check_skew"),
)


class Meter:
    def __init__(self) -> None:
        self.cpu_ns: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.statements: collections.Counter[tuple[str, str]] = collections.Counter()
        self.restore: list[Callable[[], None]] = []

    def wrap(self, owner: type, name: str) -> None:
        original = getattr(owner, name)
        label = f"{owner.__name__}.{name}"
        cpu_ns, calls = self.cpu_ns, self.calls

        per_collector = owner is CollectionLoop and name == "collect_one"

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time_ns()
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.thread_time_ns() - started
                cpu_ns[label] += spent
                calls[label] += 1
                if per_collector:  # (self, metric, now_ms): one line per collector too
                    cpu_ns[f"  {args[1].settings.name}"] += spent
                    calls[f"  {args[1].settings.name}"] += 1

        setattr(owner, name, timed)
        self.restore.append(lambda: setattr(owner, name, original))

    def watch_gc(self) -> None:
        """Time each collection of the cyclic garbage collector, per generation."""
        started: dict[int, int] = {}

        def callback(phase: str, info: dict[str, int]) -> None:
            thread = threading.get_ident()
            if phase == "start":
                started[thread] = time.thread_time_ns()
            elif thread in started:
                label = f"gc generation {info['generation']}"
                self.cpu_ns[label] += time.thread_time_ns() - started.pop(thread)
                self.calls[label] += 1

        gc.callbacks.append(callback)
        self.restore.append(lambda: gc.callbacks.remove(callback))

    def trace_statements(self) -> None:
        original_open = SampleQueue.open.__func__  # type: ignore[attr-defined]
        statements = self.statements

        def traced_open(cls: type[SampleQueue], *args: Any, **kwargs: Any) -> SampleQueue:
            queue: SampleQueue = original_open(cls, *args, **kwargs)

            def record(sql: str) -> None:
                # The statement's shape, not its literal values: numbers vary per call.
                shape = " ".join(sql.split()).split(" WHERE ")[0].split(" VALUES ")[0]
                statements[(threading.current_thread().name, shape[:70])] += 1

            queue.conn.set_trace_callback(record)
            return queue

        SampleQueue.open = classmethod(traced_open)  # type: ignore[method-assign,assignment]
        self.restore.append(lambda: setattr(SampleQueue, "open", classmethod(original_open)))

    def reset(self) -> None:
        self.cpu_ns.clear()
        self.calls.clear()
        self.statements.clear()


def profile_threads(meter: Meter) -> list[cProfile.Profile]:
    """A cProfile.Profile in every thread started from now on (the bench's own excluded)."""
    profiles: list[cProfile.Profile] = []
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        if self.name.startswith("bench-"):
            return original(self)
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()
        try:
            return original(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    meter.restore.append(lambda: setattr(threading.Thread, "run", original))
    return profiles


def print_profile(profiles: list[cProfile.Profile], path: str) -> None:
    merged = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        merged.add(profile)
    merged.dump_stats(path)
    print(f"\ncProfile of every agent thread (warm-up included; statistics in {path})\n")
    merged.sort_stats("cumulative").print_stats("belabox_metrics/(upload|store|collectors|runtime/collection)", 30)


def thread_cpu_ns() -> dict[str, int]:
    out = {}
    for thread in threading.enumerate():
        if thread.native_id is None:
            continue
        try:
            with open(f"/proc/self/task/{thread.native_id}/schedstat") as schedstat:
                out[thread.name] = int(schedstat.read().split()[0])
        except OSError:
            continue
    return out


def scaled_tree(workdir: Path, scale: int, stack: contextlib.ExitStack) -> tuple[list[dict[str, Any]],
                                                                                 dict[str, Any]]:
    """bench_scale's tree with ``scale`` times the host series, ticking once a second until
    ``stack`` closes; the metrics and host settings that point the agent at it."""
    from bench.bench_scale import (
        FixtureTree,
        Ticker,
        base_host_series,
        host_series,
        interfaces_for,
        scaled_metrics,
    )

    interfaces = interfaces_for(scale, 2, base_host_series(workdir, 2))
    tree = FixtureTree(workdir / f"tree-{scale}x", interfaces, seed=scale)
    stack.enter_context(Ticker([tree]))
    print(f"tree: {interfaces} interfaces, {host_series(tree.root, interfaces)} host series")
    return scaled_metrics(interfaces), tree.host_settings()


def main(argv: list[str] | None = None) -> int:
    from tests.helpers import free_port
    from tests.vm import VictoriaMetrics, vm_available

    from bench.bench_footprint import default_config

    parser = argparse.ArgumentParser(description="where the agent's CPU goes at the default config")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=40.0,
                        help="past the first self-metrics collection (30 s), which registers its series once")
    parser.add_argument("--trace-sql", action="store_true", help="count SQL statements (costs CPU itself)")
    parser.add_argument("--sync", choices=("full", "normal"), default="full",
                        help="what-if: SQLite synchronous for every connection (the agent uses full)")
    parser.add_argument("--scale", type=int, default=0,
                        help="N: on bench_scale's generated tree with N times the host series (0: this machine)")
    parser.add_argument("--quick", action="store_true", help="15 s after a 5 s warm-up (a smoke run)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile every agent thread, statistics into FILE")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 15.0, 5.0
    binary = vm_available()
    if binary is None:
        print("victoria-metrics not installed (Debian package victoria-metrics)")
        return 2
    meter = Meter()
    for owner, name in PARTS:
        meter.wrap(owner, name)
    meter.watch_gc()
    if args.trace_sql:
        meter.trace_statements()
    profiles = profile_threads(meter) if args.profile else []
    if args.sync == "normal":
        original_connect = queue_module.connect
        queue_module.connect = functools.partial(original_connect, synchronous="NORMAL")  # type: ignore[assignment]
        meter.restore.append(lambda: setattr(queue_module, "connect", original_connect))
    with temp_dir("bench-cpu-parts-") as directory, contextlib.ExitStack() as scaled:
        workdir = Path(directory)
        metrics, extra = None, None
        if args.scale:
            metrics, extra = scaled_tree(workdir, args.scale, scaled)
        vm = VictoriaMetrics(binary, workdir / "vm", free_port())
        vm.start()
        agent = agent_module.Agent(load_config(str(default_config(workdir, "cpu-parts", vm.import_url,
                                                                  free_port(), metrics=metrics, extra=extra))))
        runner = threading.Thread(target=agent.run, name="agent-main", daemon=True)
        try:
            runner.start()
            time.sleep(args.warmup)
            meter.reset()
            before, started = thread_cpu_ns(), time.monotonic()
            uploaded_before = agent.uploader.uploaded_total if agent.uploader else 0
            time.sleep(args.seconds)
            after, window = thread_cpu_ns(), time.monotonic() - started
            uploaded = (agent.uploader.uploaded_total if agent.uploader else 0) - uploaded_before
        finally:
            agent.stop.set()
            runner.join(30)
            vm.stop()
            for restore in meter.restore:
                restore()
    if profiles:
        print_profile(profiles, args.profile)
    per_minute = 60.0 / window
    rows: list[list[object]] = [
        [name, (after[name] - before[name]) / 1e6 * per_minute] for name in sorted(before) if name in after
        and after[name] != before[name] and not name.startswith("bench-")  # the --scale tree's ticker
    ]
    total_ms = sum(float(r[1]) for r in rows)  # type: ignore[arg-type]
    rows.append(["all threads", total_ms])
    print(f"\nCPU per thread, ms per minute ({window:.0f} s window after a {args.warmup:.0f} s warm-up, "
          f"synchronous={args.sync.upper()})\n")
    print(table(["thread", "CPU ms/min"], rows))
    if uploaded:
        print(f"\nsamples uploaded: {uploaded * per_minute:.0f} per minute: "
              f"{total_ms * 1000 / (uploaded * per_minute):.1f} µs of CPU per sample (all threads)")
    rows = [[label, ns / 1e6 * per_minute, meter.calls[label] * per_minute, ns / 1e3 / meter.calls[label]]
            for label, ns in meter.cpu_ns.most_common()]
    print("\nCPU per part (parts nest: a cycle holds its claim, request and acknowledgement; a garbage "
          "collection runs inside whichever part allocated)\n")
    print(table(["part", "CPU ms/min", "calls/min", "µs/call"], rows))
    if not args.trace_sql:
        return 0
    by_thread: collections.Counter[str] = collections.Counter()
    for (thread, _), count in meter.statements.items():
        by_thread[thread] += count
    print("\nSQL statements per minute\n")
    print(table(["thread", "statement", "per minute"],
                [[thread, shape, count * per_minute] for (thread, shape), count in meter.statements.most_common(15)]
                + [[thread, "all", count * per_minute] for thread, count in by_thread.items()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
