"""Soak: the agent with short intervals against a real VictoriaMetrics on loopback that is
restarted periodically; at the end, an audit of collected / stored / delivered / duplicated
and the agent's RSS over time. Exit 0 only if nothing was lost or duplicated and RSS stayed
flat after warm-up. Run through scripts/soak.sh MINUTES.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "src")]

from tests.fault.support import (  # noqa: E402
    agent_config,
    audit,
    cpu_seconds,
    pending,
    rss_kib,
    start_agent,
    stop_agent,
)
from tests.helpers import free_port  # noqa: E402
from tests.vm import VictoriaMetrics, vm_available  # noqa: E402

DEVICE = "soak-box"
# Real host collectors on this machine's /proc and /sys plus two mock sources at 100-200 ms:
# ~100 samples/s, 20x the default config's rate, so a leak per sample shows within minutes.
METRICS = """
  - {name: cpu, interval: 1s}
  - {name: memory, interval: 1s}
  - {name: disk, interval: 1s}
  - {name: network, interval: 1s}
  - {name: system, interval: 5s}
  - {name: thermal, interval: 1s, mock: true}
  - {name: cpu.temperature, interval: 200ms, mock: true}
  - {name: srt.packet_loss, interval: 100ms, mock: true}"""


def collected_total(health_port: int) -> float | None:
    """Samples the collectors produced, from the agent's own /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("collector_metrics_collected_total{"))


def run(minutes: float, restart_every: float, down_for: float, rss_every: float, warmup: float,
        rss_bound_kib: int, workdir: Path) -> dict[str, object]:
    binary = vm_available()
    if binary is None:
        raise SystemExit("soak: victoria-metrics is not installed (Debian package victoria-metrics)")
    vm = VictoriaMetrics(binary, workdir / "vm-data", free_port())
    vm.start()
    health_port = free_port()
    db = workdir / "agent.db"
    config = agent_config(workdir, vm.import_url, device=DEVICE, db=db, health_port=health_port,
                          metrics=METRICS, extra="monitoring: {self_metrics_interval: 5s}")
    log = workdir / "agent.log"
    duration = minutes * 60
    agent = start_agent(config, log)
    started = time.monotonic()
    rss: list[tuple[float, int]] = []
    restarts = 0
    next_rss, next_restart, vm_back_at = started, started + restart_every, None
    failure: str | None = None
    collected = None
    try:
        while (now := time.monotonic()) < started + duration:
            if agent.poll() is not None:
                failure = f"agent exited early with {agent.returncode}"
                break
            if now >= next_rss:
                value = rss_kib(agent.pid)
                if value is not None:
                    rss.append((round(now - started, 1), value))
                next_rss += rss_every
            if vm_back_at is None and now >= next_restart and now + down_for < started + duration - 5:
                vm.stop()
                restarts += 1
                vm_back_at = now + down_for
            elif vm_back_at is not None and now >= vm_back_at:
                vm.start()
                vm_back_at = None
                next_restart = time.monotonic() + restart_every
            time.sleep(0.2)
        if vm_back_at is not None:
            vm.start()
        cpu = cpu_seconds(agent.pid)
        collected = collected_total(health_port)
        left = pending(db, vm.import_url)
        code = stop_agent(agent)
        if failure is None and code != 0:
            failure = f"agent exit code {code}"
        result = audit(vm, db, vm.import_url, DEVICE)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        vm.stop()
    after = [kib for t, kib in rss if t >= warmup]
    baseline = after[0] if after else None
    growth = (max(after) - baseline) if after and baseline is not None else None
    report: dict[str, object] = {
        "minutes": minutes, "vm_restarts": restarts, "vm_down_seconds_each": down_for,
        "collected_at_end": collected, "stored": result.stored, "stored_self_metrics": result.stored_self, "sent": result.sent,
        "delivered": result.delivered, "missing": len(result.missing_sent), "duplicates": result.duplicates,
        "unknown_in_vm": result.unknown_in_vm, "pending_at_stop": left, "unsent_after_stop": result.unsent,
        "dead_letters": result.dead_letters, "agent_cpu_seconds": cpu,
        "rss_kib": {"warmup_s": warmup, "at_warmup": baseline, "max_after_warmup": max(after) if after else None,
                    "growth_after_warmup": growth, "bound": rss_bound_kib,
                    "median": statistics.median(k for _, k in rss) if rss else None,
                    "final": rss[-1][1] if rss else None},
        "rss_series": rss,
        "db_bytes": db.stat().st_size if db.exists() else 0,
    }
    problems = [failure] if failure else []
    if result.missing_sent:
        problems.append(f"{len(result.missing_sent)} samples counted as sent are not in VM, "
                        f"e.g. {result.missing_sent[:3]}")
    if result.duplicates:
        problems.append(f"{result.duplicates} samples are in VM more than once")
    if result.unknown_in_vm:
        problems.append(f"{result.unknown_in_vm} samples in VM were never stored by the agent")
    if result.unsent:
        problems.append(f"{result.unsent} samples still unsent after the final upload")
    # Collectors keep running between the /metrics read and SIGTERM, so the store may hold
    # more than was counted, never fewer.
    if collected is not None and result.stored - result.stored_self + result.dead_letters < collected:
        problems.append(f"stored {result.stored - result.stored_self} collector samples < collected {collected:.0f}")
    if growth is None:
        problems.append("no RSS readings after warm-up")
    elif growth > rss_bound_kib:
        problems.append(f"RSS grew by {growth} KiB after warm-up (bound {rss_bound_kib} KiB)")
    report["problems"] = problems
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("minutes", type=float)
    parser.add_argument("--restart-every", type=float, default=None,
                        help="seconds between VM restarts (default: duration/6, at most 300)")
    parser.add_argument("--down-for", type=float, default=5.0, help="seconds VM stays down each time")
    parser.add_argument("--rss-every", type=float, default=5.0, help="seconds between RSS readings")
    parser.add_argument("--warmup", type=float, default=None, help="seconds (default: 25%% of the run)")
    parser.add_argument("--rss-bound-kib", type=int, default=3072,
                        help="allowed RSS growth after warm-up (default 3072 KiB)")
    parser.add_argument("--report", type=Path, default=None, help="write the JSON report here too")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the database and logs here")
    args = parser.parse_args()
    duration = args.minutes * 60
    restart_every = args.restart_every or min(300.0, max(20.0, duration / 6))
    warmup = args.warmup if args.warmup is not None else duration * 0.25
    with tempfile.TemporaryDirectory(prefix="belabox-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(args.minutes, restart_every, args.down_for, args.rss_every, warmup,
                     args.rss_bound_kib, workdir)
    text = json.dumps(report, indent=1)
    if args.report:
        args.report.write_text(text)
    summary = {k: v for k, v in report.items() if k != "rss_series"}
    print(json.dumps(summary, indent=1))
    series = report["rss_series"]
    assert isinstance(series, list)
    step = max(1, len(series) // 20)
    print("RSS over time (s, KiB):", " ".join(f"{t:g}:{k}" for t, k in series[::step]))
    problems = report["problems"]
    assert isinstance(problems, list)
    for problem in problems:
        print("SOAK FAILED:", problem)
    if not problems:
        print("SOAK OK: nothing lost, nothing duplicated, RSS flat")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
