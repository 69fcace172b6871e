"""Dead letters back into the queue: the store's requeue and `metrics-collector dead-letters`."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from belabox_metrics.cli.collector import main
from belabox_metrics.clock import FakeClock
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.uploader import Uploader, UploadPolicy
from tests.unit.test_uploader import NOW, NOW_MS, URL, ScriptedTransport, fill

# The destination the uploader records progress under (remote.url, redacted).
DEST = URL


def uploader(queue: SampleQueue, transport: ScriptedTransport) -> Uploader:
    return Uploader(queue, transport, url=URL, fmt=wire_format("vm-jsonl", "box-1"), clock=FakeClock(wall=NOW),
                    log=logging.getLogger("test"), policy=UploadPolicy(max_samples=20), rng=random.Random(1))


def dead_letter_one(queue: SampleQueue, value: float = 5.0) -> ScriptedTransport:
    fill(queue, 12)
    transport = ScriptedTransport(refuse={value})
    assert uploader(queue, transport).run_cycle().dead == 1
    assert [r.sample.value for r, _ in queue.dead_letters()] == [value] and queue.pending_count(DEST) == 0
    return transport


def test_requeued_dead_letters_are_sent_once_more_ahead_of_the_backlog(tmp_path: Path) -> None:
    queue = SampleQueue.open(str(tmp_path / "m.db"))
    dead_letter_one(queue)
    fill(queue, 3, start_ms=NOW_MS - 60_000)  # newer backlog
    assert queue.requeue_dead_letters(DEST) == 1
    assert queue.requeue_dead_letters(DEST) == 0  # exactly once
    assert queue.dead_letters() == [] and queue.pending_count(DEST) == 4
    fixed = ScriptedTransport()  # the operator fixed the destination
    result = uploader(queue, fixed).run_cycle()
    assert result.dead == 0 and queue.pending_count(DEST) == 0
    assert fixed.values() == [5.0, 0.0, 1.0, 2.0]  # the requeued one first, then the backlog
    assert uploader(queue, fixed).run_cycle().batches == 0  # and never again


def test_a_requeued_sample_still_refused_becomes_a_dead_letter_again(tmp_path: Path) -> None:
    queue = SampleQueue.open(str(tmp_path / "m.db"))
    dead_letter_one(queue)
    fill(queue, 3, start_ms=NOW_MS - 60_000)
    queue.requeue_dead_letters(DEST)
    assert uploader(queue, ScriptedTransport(refuse={5.0})).run_cycle().dead == 1
    assert [r.sample.value for r, _ in queue.dead_letters()] == [5.0] and queue.pending_count(DEST) == 0


def test_requeue_restores_a_sample_retention_deleted_and_filters(tmp_path: Path) -> None:
    queue = SampleQueue.open(str(tmp_path / "m.db"))
    dead_letter_one(queue)
    assert queue.prune_sent([DEST], NOW_MS) == 12  # retention removed the sent rows, 5.0 too
    assert queue.requeue_dead_letters(DEST, metric="no.such.metric") == 0
    assert queue.requeue_dead_letters("http://elsewhere/api/v1/import") == 0
    assert queue.requeue_dead_letters(DEST, since_ms=0, metric="cpu.temperature") == 1
    fixed = ScriptedTransport()
    uploader(queue, fixed).run_cycle()
    assert fixed.values() == [5.0] and queue.pending_count(DEST) == 0


def config(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
device: {{id: box-1}}
storage: {{path: {tmp_path / 'm.db'}}}
remote: {{url: "{URL}", format: vm-jsonl}}
health: {{listen: "off"}}
metrics: [{{name: memory}}]
""")
    return str(path)


def test_cli_lists_and_requeues_with_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    assert main(["dead-letters", "--config", cfg]) == 1  # no database yet
    queue = SampleQueue.open(str(tmp_path / "m.db"))
    dead_letter_one(queue)
    capsys.readouterr()
    assert main(["dead-letters", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "cpu.temperature" in out and "too long line" in out and "1 shown of 1" in out
    assert main(["dead-letters", "requeue", "--config", cfg]) == 2  # which ones? say so
    assert "--all" in capsys.readouterr().err
    assert main(["dead-letters", "requeue", "--since", "soon", "--config", cfg]) == 2
    assert main(["dead-letters", "requeue", "--all", "--config", cfg]) == 0
    assert "requeued 1 dead letters" in capsys.readouterr().out
    # The agent's queue (open all along, like the running agent's) sees it on its next claim.
    fixed = ScriptedTransport()
    uploader(queue, fixed).run_cycle()
    assert fixed.values() == [5.0]
    assert main(["dead-letters", "requeue", "--all", "--config", cfg]) == 0
    assert "requeued 0 dead letters" in capsys.readouterr().out
    assert main(["dead-letters", "--config", cfg]) == 0 and "no dead letters" in capsys.readouterr().out
