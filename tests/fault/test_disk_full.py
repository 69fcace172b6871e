"""Disk full while the agent writes: its database lives on a small filesystem of its own
(an 8 MiB ext4 image on a loop device, or a tmpfs with a size limit where loop devices are
not available), which the test fills to the last block.

Expected: inserts fail (SQLITE_FULL), the agent keeps running with the samples held in
memory and says so on /health (degraded); nothing is corrupt; once space returns, the held
samples are stored (no gap in the series) and everything reaches VM exactly once.

Mounting needs root: on a machine where neither mount works the test is skipped with the
reason (CI runs as root, where it works)."""

from __future__ import annotations

import errno
import itertools
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from belabox_metrics.store.queue import SampleQueue
from tests.fault.proxy import Fault, FaultProxy
from tests.fault.support import agent_config, audit, get_json, pending, start_agent, stop_agent
from tests.helpers import free_port
from tests.integration.test_vm_delivery import backlog
from tests.vm import VictoriaMetrics

DEVICE = "full-box"
SIZE_MIB = 8


def _run(*args: str) -> bool:
    return subprocess.run(args, capture_output=True, timeout=30).returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(mount point, "ext4 on loop" | "tmpfs") of SIZE_MIB, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    where = tmp_path / "small"
    where.mkdir()
    image = tmp_path / "fs.img"
    with image.open("wb") as handle:
        handle.truncate(SIZE_MIB << 20)
    if _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image)) and _run("mount", "-o", "loop", str(image), str(where)):
        kind = "ext4 on loop"
    elif _run("mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs", str(where)):
        kind = "tmpfs"
    else:
        pytest.skip("neither `mount -o loop` nor `mount -t tmpfs` is permitted here")
    try:
        yield where, kind
    finally:
        if not _run("umount", str(where)):
            _run("umount", "-l", str(where))


def fill(directory: Path) -> Path:
    """Write a file until the filesystem refuses another byte (bounded by its size)."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as handle:
        for _ in range((SIZE_MIB << 20) // len(chunk) + 16):
            try:
                handle.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        # The last partial blocks too, so nothing at all is left.
        for size in (4096, 512, 1):
            for _ in range(64):
                try:
                    handle.write(b"\0" * size)
                except OSError:
                    break
    return filler


def srt_timestamps(db: Path) -> list[int]:
    queue = SampleQueue.open(str(db))
    try:
        return [r.ts for r in queue.all() if r.sample.name == "srt.packet_loss"]
    finally:
        queue.close()


def storage_health(port: int) -> dict[str, object]:
    """The storage component of /health (the backlog alone makes the whole status degraded)."""
    components = get_json(f"http://127.0.0.1:{port}/health")[1]["components"]
    assert isinstance(components, dict)
    return components["storage"]  # type: ignore[no-any-return]


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_disk_full_keeps_running_degraded_then_resumes(
        small_fs: tuple[Path, str], victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    where, kind = small_fs
    db = where / "agent.db"
    # A backlog drained slowly (0.25 s per request, through the proxy) while the disk
    # fills: acknowledging an upload is a database write too.
    backlog(db, 20_000)
    proxy = FaultProxy("127.0.0.1", victoria_metrics.port, [Fault.slow(0.25)] * 40).start()
    port = free_port()
    config = agent_config(tmp_path, proxy.url, device=DEVICE, db=db, health_port=port,
                          remote_interval="500ms", batch=1000)
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        time.sleep(1.5)
        assert storage_health(port)["status"] == "ok"
        filler = fill(where)
        full_since = time.time()
        wait_for(lambda: "could not store samples" in log.read_text(), 20, f"SQLITE_FULL on {kind}")
        time.sleep(2.0)  # a few more collection rounds with nowhere to put them
        assert agent.poll() is None, log.read_text()[-3000:]
        _, health = get_json(f"http://127.0.0.1:{port}/health")
        assert health["status"] == "degraded", health
        assert storage_health(port)["status"] == "degraded", health
        assert pending(db, proxy.url) > 0  # acknowledgements were failing too, data stays pending
        filler.unlink()  # space returns
        freed_at = time.time()
        wait_for(lambda: srt_timestamps(db)[-1] > freed_at * 1000, 20, "storing to resume")
        wait_for(lambda: pending(db, proxy.url) < 100, 30, "the backlog to go out")
        assert agent.poll() is None, log.read_text()[-3000:]
        wait_for(lambda: storage_health(port)["status"] == "ok", 5, "storage health back to ok")
    finally:
        code = stop_agent(agent)
        proxy.close()
    assert code == 0, log.read_text()[-3000:]
    # One ERROR when the disk fills, not ten a second into a journal on the same disk.
    assert log.read_text().count("could not store samples") <= 2
    queue = SampleQueue.open(str(db))
    try:
        assert queue.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        queue.close()
    # Samples collected while the disk was full were held in memory, not lost: the 100 ms
    # series has no hole around the outage.
    stamps = srt_timestamps(db)
    during = [t for t in stamps if full_since * 1000 <= t <= freed_at * 1000]
    assert len(during) >= 10
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) < 1000, max(gaps)
    result = audit(victoria_metrics, db, proxy.url, DEVICE)
    assert result.unsent == 0 and not result.missing_sent and result.duplicates == 0
    assert result.delivered == result.stored
