"""Run the store, drain and wire benchmarks (issue 4), then the footprint beside node_exporter +
vmagent and its growth at 10x / 100x the series (issue 9), one after the other.

    .venv/bin/python -m bench            # full runs, ~6 minutes on 2 cores + ~3 for footprint and scale
    .venv/bin/python -m bench --quick    # CI: 50,000 samples, 10 minutes of wire data

Each benchmark runs in its own process, so one's memory never shows in another's figures.
The exit status is the first non-zero one.
"""

from __future__ import annotations

import subprocess
import sys

from bench._common import REPO_ROOT

BENCHMARKS = ("bench.bench_store", "bench.bench_drain", "bench.bench_wire", "bench.bench_footprint",
              "bench.bench_cpu_parts", "bench.bench_scale", "bench.bench_receiver_memory")


def main(argv: list[str] | None = None) -> int:
    extra = ["--quick"] if "--quick" in (sys.argv[1:] if argv is None else argv) else []
    status = 0
    for module in BENCHMARKS:
        print(f"\n=== {module} {' '.join(extra)}".rstrip(), flush=True)
        code = subprocess.run([sys.executable, "-m", module, *extra], cwd=REPO_ROOT, timeout=900,
                              check=False).returncode
        status = status or code
    return status


if __name__ == "__main__":
    raise SystemExit(main())
