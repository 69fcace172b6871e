"""Fleet auth: the real agent -> real vmauth -> real VictoriaMetrics, all on 127.0.0.1.

vmauth is configured from deploy/vmauth/vmauth.example.yml itself (tokens replaced by fresh
random ones, the backend address by the test's VictoriaMetrics), so the shipped example is
what is proven: one bearer token per device, only /api/v1/import routed, and the device_id
label pinned by `extra_label` whatever the device claims.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from belabox_metrics.logs import redact_url
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.encode import promql_name
from tests.helpers import REPO_ROOT, cli, free_port, require_tool, wait_for_port
from tests.vm import VictoriaMetrics

EXAMPLE = REPO_ROOT / "deploy" / "vmauth" / "vmauth.example.yml"
EXAMPLE_BACKEND = "http://127.0.0.1:8428"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
DEVICE_A = "belabox-001"
DEVICE_B = "belabox-002"


@dataclass
class Fleet:
    vm: VictoriaMetrics
    vmauth_url: str
    tokens: dict[str, str]          # device id -> its bearer token

    @property
    def import_url(self) -> str:
        return f"{self.vmauth_url}/api/v1/import"


def vmauth_config(example: dict[str, object], backend: str, tokens: dict[str, str]) -> dict[str, object]:
    users = []
    for user in example["users"]:  # type: ignore[attr-defined]
        user = dict(user)
        user["bearer_token"] = tokens[user["name"]]
        user["url_map"] = [{**route, "url_prefix": route["url_prefix"].replace(EXAMPLE_BACKEND, backend)}
                           for route in user["url_map"]]
        users.append(user)
    return {"users": users}


@pytest.fixture
def fleet(victoria_metrics: VictoriaMetrics, tmp_path: Path) -> Iterator[Fleet]:
    binary = require_tool("vmauth", "victoria-metrics")
    example = yaml.safe_load(EXAMPLE.read_text())
    tokens = {user["name"]: secrets.token_urlsafe(24) for user in example["users"]}
    config = tmp_path / "vmauth.yml"
    config.write_text(yaml.safe_dump(vmauth_config(example, victoria_metrics.url, tokens)))
    port = free_port()
    log = (tmp_path / "vmauth.log").open("ab")
    proc = subprocess.Popen([binary, f"-httpListenAddr=127.0.0.1:{port}", f"-auth.config={config}",
                             "-loggerLevel=WARN"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        yield Fleet(victoria_metrics, f"http://127.0.0.1:{port}", tokens)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# -- the agent ------------------------------------------------------------------------

def write_token(path: Path, token: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def write_config(tmp: Path, device_id: str, url: str, token_file: Path | None,
                 health_port: int | None = None) -> Path:
    config = tmp / "config.yaml"
    token_line = f"  token_file: {token_file}\n" if token_file else ""
    config.write_text(f"""
device: {{id: {device_id}}}
storage: {{path: {tmp / 'agent.db'}}}
remote:
  url: "{url}"
  format: vm-jsonl
  interval: 500ms
  timeout: 2s
  shutdown_grace: 3s
  retry: {{max_attempts: 1, backoff_base: 100ms, backoff_max: 200ms}}
{token_line}logging: {{level: info, format: json}}
health: {{listen: "127.0.0.1:{health_port or free_port()}"}}
metrics:
  - {{name: cpu.temperature, interval: 200ms, mock: true}}
  - {{name: srt.packet_loss, interval: 200ms, mock: true}}
""")
    return config


def pending(db: Path, url: str) -> int:
    queue = SampleQueue.open(str(db))
    try:
        return queue.pending_count(redact_url(url))
    finally:
        queue.close()


def dead_letters(db: Path) -> int:
    queue = SampleQueue.open(str(db))
    try:
        return len(queue.dead_letters())
    finally:
        queue.close()


def stored_in_agent(db: Path) -> set[tuple[str, int, float]]:
    """(PromQL name, timestamp, value) of every numeric sample the agent stored."""
    queue = SampleQueue.open(str(db))
    try:
        return {(promql_name(r.sample.name), r.ts, float(r.sample.value)) for r in queue.all()
                if r.sample.value is not None}
    finally:
        queue.close()


def in_vm(vm: VictoriaMetrics) -> dict[str, set[tuple[str, int, float]]]:
    """device_id -> (name, timestamp, value) of every sample VictoriaMetrics holds."""
    out: dict[str, set[tuple[str, int, float]]] = {}
    for name, labels, ts, value in vm.samples():
        out.setdefault(dict(labels).get("device_id", "<none>"), set()).add((name, ts, value))
    return out


def in_vm_when_settled(vm: VictoriaMetrics, expected: int, timeout: float = 10.0) -> dict[str, set[tuple[str, int, float]]]:
    """``in_vm`` once it holds ``expected`` samples: VM 1.79 makes just-imported rows
    searchable up to about a second after a 204, even after /internal/force_flush."""
    deadline = time.monotonic() + timeout
    while True:
        stored = in_vm(vm)
        if sum(map(len, stored.values())) >= expected or time.monotonic() > deadline:
            return stored
        time.sleep(0.2)


def run_agent_until(config: Path, log: Path, done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Run `metrics-collector run` until ``done()`` (polled every 0.25 s), then SIGTERM it."""
    with log.open("ab") as out:
        agent = subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)], env=ENV,
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done():
            assert agent.poll() is None, log.read_text()[-3000:]
            time.sleep(0.25)
        assert done(), f"condition not reached in {timeout}s:\n{log.read_text()[-3000:]}"
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, log.read_text()[-3000:]


def log_events(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def uploads(log: Path) -> list[dict[str, object]]:
    return [e for e in log_events(log) if e.get("msg") == "uploaded"]


def upload_failures(log: Path) -> list[dict[str, object]]:
    return [e for e in log_events(log) if e.get("msg") == "upload failed; samples stay queued"]


def health_uploader(port: int) -> dict[str, object] | None:
    """The uploader component of the agent's /health document (None while it is not up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            document = json.loads(answer.read())
    except urllib.error.HTTPError as exc:  # 503 while status is error: still a document
        document = json.loads(exc.read())
    except OSError:
        return None
    return document["components"]["uploader"]  # type: ignore[no-any-return]


def post(url: str, body: bytes, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# -- the example file -----------------------------------------------------------------

def test_example_gives_each_device_one_token_one_route_and_a_pinned_device_id() -> None:
    users = yaml.safe_load(EXAMPLE.read_text())["users"]
    assert len(users) >= 2
    assert len({u["bearer_token"] for u in users}) == len(users), "tokens must differ per device"
    for user in users:
        assert set(user) == {"name", "bearer_token", "url_map"}, "no url_prefix outside url_map: only import"
        (route,) = user["url_map"]
        assert route["src_paths"] == ["/api/v1/import"]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(route["url_prefix"]).query)
        assert query == {"extra_label": [f"device_id={user['name']}"]}


# -- the real thing -------------------------------------------------------------------

def test_right_token_stores_every_sample_under_the_pinned_device_id(fleet: Fleet, tmp_path: Path) -> None:
    token_file = write_token(tmp_path / "api-token", fleet.tokens[DEVICE_A])
    config = write_config(tmp_path, DEVICE_A, fleet.import_url, token_file)
    db, log = tmp_path / "agent.db", tmp_path / "agent.log"
    run_agent_until(config, log, lambda: len(uploads(log)) >= 3)
    assert pending(db, fleet.import_url) == 0 and dead_letters(db) == 0
    stored = in_vm_when_settled(fleet.vm, len(stored_in_agent(db)))
    assert set(stored) == {DEVICE_A}
    assert stored[DEVICE_A] == stored_in_agent(db)
    assert fleet.tokens[DEVICE_A] not in log.read_text()


def test_a_device_cannot_write_as_another(fleet: Fleet, tmp_path: Path) -> None:
    # Box A's token, but its config claims to be box B, in every line and in the URL too.
    url = fleet.import_url + "?" + urllib.parse.urlencode({"extra_label": f"device_id={DEVICE_B}"})
    token_file = write_token(tmp_path / "api-token", fleet.tokens[DEVICE_A])
    config = write_config(tmp_path, DEVICE_B, url, token_file)
    db, log = tmp_path / "agent.db", tmp_path / "agent.log"
    run_agent_until(config, log, lambda: len(uploads(log)) >= 3)
    assert pending(db, url) == 0 and dead_letters(db) == 0
    stored = in_vm_when_settled(fleet.vm, len(stored_in_agent(db)))
    assert set(stored) == {DEVICE_A}, f"VM holds series of {sorted(stored)}"
    assert stored[DEVICE_A] == stored_in_agent(db)


def test_a_device_token_reaches_nothing_but_import(fleet: Fleet) -> None:
    token = fleet.tokens[DEVICE_A]
    assert post(fleet.import_url, b"", token)[0] == 204  # the README's check of a new token
    for path in ("/api/v1/query?query=up", "/api/v1/export?match[]=up", "/api/v1/admin/tsdb/delete_series"):
        status, _ = post(fleet.vmauth_url + path, b"", token)
        assert status >= 400, f"{path} answered {status} to a device token"


def kept_then_delivered(fleet: Fleet, tmp_path: Path, bad_token: str | None, status: int) -> None:
    """The agent keeps everything while vmauth refuses it; fixed token -> all of it arrives."""
    url = fleet.import_url
    token_file = write_token(tmp_path / "api-token", bad_token) if bad_token else None
    health_port = free_port()
    config = write_config(tmp_path, DEVICE_A, url, token_file, health_port)
    db, log = tmp_path / "agent.db", tmp_path / "agent.log"
    health: list[dict[str, object] | None] = []

    def refused_long_enough() -> bool:
        health.append(health_uploader(health_port))
        # Stop early on dead letters: that is the failure this test exists to catch.
        # Identical warnings are logged once, then counted once a minute: one line stands for
        # every refusal; pending growing past 20 shows several cycles were refused.
        return len(upload_failures(log)) >= 1 and (pending(db, url) >= 20 or dead_letters(db) > 0)

    run_agent_until(config, log, refused_long_enough)
    # The operator sees why on the box: /health names the refusal while it happens.
    uploader = health[-1]
    assert uploader is not None and f"HTTP {status}" in str(uploader["last_error"]), uploader
    assert uploader["last_success"] is None and uploader["dead_letters"] == 0, uploader

    failures = upload_failures(log)
    assert {f.get("http_status") for f in failures} == {status}
    (final,) = [e for e in log_events(log) if e.get("msg") == "final upload"]
    assert "authentication refused" in str(final["error"]), final
    kept = stored_in_agent(db)
    assert pending(db, url) == len(kept) and dead_letters(db) == 0
    assert in_vm(fleet.vm) == {}
    if bad_token:
        assert bad_token not in log.read_text(), "the token must never reach the log"

    write_token(tmp_path / "api-token", fleet.tokens[DEVICE_A])
    config = write_config(tmp_path, DEVICE_A, url, tmp_path / "api-token")
    run_agent_until(config, log, lambda: len(uploads(log)) >= 3)
    assert pending(db, url) == 0 and dead_letters(db) == 0
    stored = in_vm_when_settled(fleet.vm, len(stored_in_agent(db)))
    assert set(stored) == {DEVICE_A}
    assert kept <= stored[DEVICE_A] and stored[DEVICE_A] == stored_in_agent(db)


def test_no_token_is_refused_with_401_and_the_agent_keeps_the_data(fleet: Fleet, tmp_path: Path) -> None:
    status, _ = post(fleet.import_url, b"", None)
    assert status == 401
    kept_then_delivered(fleet, tmp_path, None, 401)


def test_wrong_token_is_refused_and_the_agent_keeps_the_data(fleet: Fleet, tmp_path: Path,
                                                             request: pytest.FixtureRequest) -> None:
    wrong = secrets.token_urlsafe(24)
    # Debian's vmauth 1.79 answers an unknown token with 400 "cannot find the provided auth
    # token ..." (newer releases answer 401). It is not the samples' fault, so they must
    # stay queued, not be bisected into dead letters as a 400 for bad data would be.
    status, body = post(fleet.import_url, b"", wrong)
    assert status in (400, 401)
    if status == 400:  # vmauth before 1.80: the uploader must treat it like a 401
        assert body.startswith("cannot find the provided auth token")
    kept_then_delivered(fleet, tmp_path, wrong, status)
