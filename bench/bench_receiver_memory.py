"""metrics-receiver's peak memory under 20 concurrent maximal uploads, bounded and not
(issue 17).

    .venv/bin/python -m bench.bench_receiver_memory              # 30 s of load per run
    .venv/bin/python -m bench.bench_receiver_memory --seconds 60
    .venv/bin/python -m bench.bench_receiver_memory --quick      # 10 s

The load of tests/integration/test_receiver_memory.py (tests/receiver_load.py): 20 senders,
each posting 4 MiB bodies of ~40,000 small samples (every other one gzip-compressed), one
after another, retrying a 503 after its Retry-After. Two receivers, one after the other,
each a fresh process: (a) the defaults (4 x 4 MiB of buffered body bytes, 2 bodies decoded
at once), (b) the peer, no bound: every body read, decoded and held until stored at once,
what the receiver did before the bound (it decoded on asyncio's default executor, then every
batch waited for the one database thread). Printed per run: peak RSS (VmHWM), uploads stored, samples stored per second, share
of 503 answers.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import cli, free_port, wait_for_port
from tests.receiver_load import maximal_body, peak_rss_bytes, run_load

from belabox_metrics.receiver.app import DEFAULT_MAX_BODY_BYTES
from bench._common import table

SENDERS = 20


def one_run(name: str, extra: list[str], template: bytes, per_body: int, seconds: float
            ) -> list[object]:
    with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp:
        port = free_port()
        proc = subprocess.Popen(
            [*cli("metrics-receiver"), "--listen", f"127.0.0.1:{port}",
             "--db", str(Path(tmp) / "r.db"), "--log-level", "warning", *extra],
        )
        try:
            wait_for_port("127.0.0.1", port, proc=proc)
            load = run_load("127.0.0.1", port, template, senders=SENDERS, load_s=seconds,
                            deadline_s=seconds + 300)
            peak = peak_rss_bytes(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if load.problems:
        raise SystemExit(f"{name}: {load.problems[:3]}")
    answers = load.answers
    refused = sum(n for (status, _), n in answers.items() if status == 503)
    stored = len(load.stored)
    return [name, round(peak / 1e6, 1), stored, round(stored * per_body / load.seconds),
            f"{100 * refused / sum(answers.values()):.0f} %"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds = 10.0 if args.quick else args.seconds
    template, per_body = maximal_body(DEFAULT_MAX_BODY_BYTES, int(time.time() * 1000))
    unbounded = ["--max-buffered-bytes", str(SENDERS * DEFAULT_MAX_BODY_BYTES),
                 "--max-concurrent-decodes", str(SENDERS)]
    rows = [one_run("defaults (bounded)", [], template, per_body, seconds),
            one_run("no bound (as before)", unbounded, template, per_body, seconds)]
    print(f"{SENDERS} senders, bodies of {len(template):,} bytes ({per_body:,} samples), "
          f"{seconds:.0f} s of load per run")
    print(table(["receiver", "peak RSS MB", "uploads stored", "samples/s", "503 answers"], rows))


if __name__ == "__main__":
    main()
