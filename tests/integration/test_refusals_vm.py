"""Refusals against a real VictoriaMetrics (issue 16): a blanket 400 window in front of it
dead-letters nothing, and a sample VictoriaMetrics itself refuses (a line over
-import.maxLineLen) is dead-lettered alone, requeued with `metrics-collector dead-letters
requeue` while the queue is in use, and dead-lettered again, once, as it is still refused.

The uploader runs on the real HttpTransport; only its clock is injected, so backoff takes
no wall time. The stub in front is a small HTTP server: it forwards to VictoriaMetrics
except while its script says to answer 503 or nginx's 400 page (captured from nginx 1.22).
"""

from __future__ import annotations

import http.client
import logging
import random
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from belabox_metrics.clock import FakeClock
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import HttpTransport
from belabox_metrics.upload.uploader import Uploader, UploadPolicy
from tests.helpers import cli
from tests.integration.test_vm_delivery import DEVICE, ENV, assert_exactly_once, stored_keys
from tests.unit.test_uploader import NGINX_400
from tests.vm import VictoriaMetrics, vm_available

HTML = {"Content-Type": "text/html"}


class Stub:
    """In front of VictoriaMetrics: answers the first entries of ``script`` itself (a
    status, or 400 with nginx's page), then forwards everything."""

    def __init__(self, upstream: VictoriaMetrics, script: list[int]) -> None:
        self.script = list(script)
        self.answers: list[int] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with stub.lock:
                    scripted = stub.script.pop(0) if stub.script else None
                if scripted is None:
                    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=10)
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() in ("content-type", "content-encoding")}
                    conn.request("POST", self.path, body, headers)
                    answer = conn.getresponse()
                    status, payload = answer.status, answer.read()
                    conn.close()
                else:
                    status, payload = scripted, NGINX_400 if scripted == 400 else b""
                with stub.lock:
                    stub.answers.append(status)
                self.send_response(status)
                if status == 400:
                    self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/import"

    def __enter__(self) -> Stub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def backlog(queue: SampleQueue, count: int, series: int = 12) -> None:
    now_ms = int(time.time() * 1000)
    rng = random.Random(count)
    queue.append([Sample("refusal.value", round(rng.uniform(0, 100), 2), now_ms - 600_000 + (i // series) * 100,
                         make_labels(n=str(i % series))) for i in range(count)])


def uploader(queue: SampleQueue, url: str, clock: FakeClock, batch: int = 500) -> Uploader:
    return Uploader(queue, HttpTransport(timeout=10), url=url, fmt=wire_format("vm-jsonl", DEVICE), clock=clock,
                    log=logging.getLogger("refusals"), rng=random.Random(3),
                    policy=UploadPolicy(max_samples=batch, max_attempts=3, backoff_base=0.5, backoff_max=4.0))


def drain(up: Uploader, queue: SampleQueue, clock: FakeClock, cycles: int = 100) -> list[int]:
    requests = []
    for _ in range(cycles):
        before = up.requests_total
        up.run_cycle()
        requests.append(up.requests_total - before)
        if queue.pending_count(up.destination) == 0:
            break
        clock.advance(5.0)
    return requests


def test_blanket_400_window_in_front_of_vm_dead_letters_nothing_and_delivers_once(
        victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    queue = SampleQueue.open(str(db))
    backlog(queue, 3000)
    clock = FakeClock(wall=time.time())
    # 503 for a while, then nginx's 400 page for everything, then VictoriaMetrics again.
    with Stub(victoria_metrics, [503] * 8 + [400] * 12) as stub:
        up = uploader(queue, stub.url, clock)
        drain(up, queue, clock)
        answers = Counter(stub.answers)
    assert queue.pending_count(up.destination) == 0 and queue.dead_letters() == []
    # Each 400 cost one request (no bisection: before, each was a storm of ~2N-1), and the
    # backlog then went in 3000 / 500 = 6 requests.
    assert answers == {503: 8, 400: 12, 204: 6}
    assert up.refusing is None and up.last_error is None
    queue.close()
    assert_exactly_once(victoria_metrics, db)


def test_a_sample_vm_refuses_is_dead_lettered_requeued_and_dead_lettered_again_once(tmp_path: Path) -> None:
    binary = vm_available()
    if binary is None:
        from tests.helpers import require_tool
        binary = require_tool("victoria-metrics", "victoria-metrics")
    from tests.helpers import free_port
    vm = VictoriaMetrics(binary, tmp_path / "vm-data", free_port())
    # A destination's limit the agent cannot know: lines over 100 kB are refused. (Labels
    # that long would be truncated by the default -maxLabelValueLen: allow them.)
    vm.flags += ["-import.maxLineLen=100000", "-maxLabelValueLen=400000"]
    vm.start()
    db = tmp_path / "agent.db"
    try:
        queue = SampleQueue.open(str(db))
        backlog(queue, 600)
        now_ms = int(time.time() * 1000)
        long_label = make_labels(n="long", note="x" * 300_000)  # its line is over that limit
        queue.append([Sample("refusal.value", 42.0, now_ms - 600_000 + 2_007, long_label)])  # mid-backlog
        clock = FakeClock(wall=time.time())
        up = uploader(queue, vm.import_url, clock, batch=200)
        drain(up, queue, clock)
        dead = queue.dead_letters()
        assert [(r.sample.value, dict(r.sample.labels).get("n")) for r, _ in dead] == [(42.0, "long")]
        assert "too long line" in dead[0][1] and queue.pending_count(up.destination) == 0
        in_vm = {(labels, ts) for _, labels, ts, _ in vm.samples('{__name__="refusal_value"}')}
        assert len(in_vm) == 600  # every other sample is there

        # Requeued with the command, while the "agent" (this queue, open all along) runs: no
        # lock, one transaction. VictoriaMetrics still refuses that line (a line over 64 KiB
        # cannot be fixed by its flags: with a larger -import.maxLineLen it answers 204 and
        # silently drops such a series), so it is a dead letter again, once.
        config = tmp_path / "config.yaml"
        config.write_text(f"device: {{id: {DEVICE}}}\nstorage: {{path: {db}}}\n"
                          f"remote: {{url: '{vm.import_url}', format: vm-jsonl}}\nhealth: {{listen: 'off'}}\n"
                          "metrics: [{name: memory}]\n")
        listed = subprocess.run([*cli("metrics-collector"), "dead-letters", "--config", str(config)], env=ENV,
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and "too long line" in listed.stdout, listed.stderr
        done = subprocess.run([*cli("metrics-collector"), "dead-letters", "requeue", "--all", "--config",
                               str(config)], env=ENV, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "requeued 1 dead letters" in done.stdout, done.stderr
        assert queue.dead_letters() == [] and queue.pending_count(up.destination) == 1
        backlog_more = [Sample("refusal.value", float(i), now_ms - 1_000 + i, make_labels(n="new")) for i in range(20)]
        queue.append(backlog_more)  # the agent keeps collecting meanwhile
        drain(up, queue, clock)
        again = queue.dead_letters()
        assert [(r.sample.value, dict(r.sample.labels).get("n")) for r, _ in again] == [(42.0, "long")]
        assert queue.pending_count(up.destination) == 0
        want = {key for key in stored_keys(db) if dict(key[1]).get("n") != "long"}
        queue.close()
        deadline = time.monotonic() + 15  # VM makes the newest rows searchable with a delay
        while True:
            got = Counter((n, labels, ts, v) for n, labels, ts, v in vm.samples('{__name__="refusal_value"}'))
            if set(got) >= want or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(want) == 620 and set(got) == want and max(got.values()) == 1  # each once
    finally:
        vm.stop()
