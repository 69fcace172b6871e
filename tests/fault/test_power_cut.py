"""Power-cut model: while the real agent collects and drains a backlog into a real
VictoriaMetrics, freeze it (SIGSTOP: every thread stops at one instant, as a power cut
would stop them), copy its database, -wal and -shm as they are, and let it go on.

Each copy must be what a crash may leave and SQLite must make whole again:
- it opens, ``PRAGMA integrity_check`` is ok, and the corrupt-database check at start
  does not mistake it for corruption (a crash must never cost the data);
- every sample the copy counts as sent is in VM already, checked while the agent is
  still frozen: the acknowledgement marks never run ahead of what VM has accepted.
BELABOX_POWERCUT_ROUNDS sets how many instants (default 12).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

from belabox_metrics.logs import redact_url
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.store.recovery import diagnose
from tests.fault.proxy import Fault, FaultProxy
from tests.fault.support import agent_config, audit, local_keys, start_agent, stop_agent, vm_counts
from tests.integration.test_vm_delivery import backlog
from tests.vm import VictoriaMetrics

DEVICE = "powercut-box"
ROUNDS = int(os.environ.get("BELABOX_POWERCUT_ROUNDS", "12"))


def snapshot(db: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(str(db) + suffix):
            shutil.copyfile(str(db) + suffix, str(into / db.name) + suffix)
    return into / db.name


def test_copies_taken_at_random_instants_open_sound_and_never_claim_unsent(
        victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    backlog(db, 20_000)
    # Small requests answered after 30 ms (through the proxy): the drain lasts ~7 s, so the
    # cuts fall in the middle of it.
    proxy = FaultProxy("127.0.0.1", victoria_metrics.port, [Fault.slow(0.03)] * 1000).start()
    url = proxy.url
    config = agent_config(tmp_path, url, device=DEVICE, db=db, remote_interval="200ms", batch=100)
    log = tmp_path / "agent.log"
    rng = random.Random(9)
    agent = start_agent(config, log)
    sent_seen = []
    try:
        time.sleep(0.5)
        for n in range(ROUNDS):
            time.sleep(rng.uniform(0.1, 1.0))
            agent.send_signal(signal.SIGSTOP)
            try:
                copy = snapshot(db, tmp_path / f"cut-{n}")
                assert diagnose(str(copy)) is None, f"cut {n} looks corrupt"
                queue = SampleQueue.open(str(copy))
                try:
                    assert queue.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", n
                    sent, _ = local_keys(queue, DEVICE, redact_url(url))
                finally:
                    queue.close()
                # VM shows freshly imported rows after a short delay: poll (bounded) while
                # the agent cannot send anything more.
                deadline = time.monotonic() + 10
                missing = sent - vm_counts(victoria_metrics, DEVICE).keys()
                while missing and time.monotonic() < deadline:
                    time.sleep(0.3)
                    missing = sent - vm_counts(victoria_metrics, DEVICE).keys()
                assert not missing, f"cut {n}: {len(missing)} samples marked sent are not in VM"
                sent_seen.append(len(sent))
            finally:
                agent.send_signal(signal.SIGCONT)
            shutil.rmtree(tmp_path / f"cut-{n}")
        assert agent.poll() is None, log.read_text()[-2000:]
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGCONT)
        code = stop_agent(agent, timeout=60)
        proxy.close()
    assert code == 0, log.read_text()[-2000:]
    # The cuts fell while the upload was under way, not all before or after it.
    print("sent per cut", sent_seen)
    assert len(set(sent_seen)) > ROUNDS // 2, sent_seen
    assert log.read_text().count('"msg": "uploaded"') >= 10
    result = audit(victoria_metrics, db, url, DEVICE)
    assert not result.missing_sent and result.duplicates == 0 and result.unknown_in_vm == 0
