"""A fleet on a VictoriaMetrics cluster: the real agents -> real vmauth (one token per device,
routed to its tenant's vminsert path) -> the cluster's URL layout -> VictoriaMetrics; and the
real ``metrics-collector verify`` reading back through vmauth from the vmselect path.

vmauth runs with deploy/vmauth/vmauth.cluster.example.yml itself (tokens replaced by fresh
random ones, vminsert/vmselect by the emulation's addresses). Debian has no cluster binaries
(vminsert, vmselect, vmstorage), and its vmauth 1.79.5 cannot rewrite paths
(``drop_src_path_prefix_parts`` came later), so the cluster's URL layout is emulated by nginx:
a "vminsert" port serving only ``/insert/<accountID>/prometheus/api/v1/import`` and a
"vmselect" port serving only ``/select/<accountID>/prometheus/api/v1/export``, each tenant
(accountID) being its own single-node VictoriaMetrics (dedup off, so a sample stored twice
shows). Anything else gets 400 "unsupported path", as vminsert/vmselect answer.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT, cli, free_port, require_tool, wait_for_port
from tests.integration.test_fleet_auth import (
    dead_letters,
    pending,
    post,
    run_agent_until,
    stored_in_agent,
    upload_failures,
    uploads,
    write_config,
    write_token,
)
from tests.vm import VictoriaMetrics, vm_available

pytestmark = pytest.mark.slow

EXAMPLE = REPO_ROOT / "deploy" / "vmauth" / "vmauth.cluster.example.yml"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
TENANTS = {"belabox-001": 1, "belabox-002": 2}   # as the example routes them


@dataclass
class Cluster:
    vmauth_url: str
    tenants: dict[int, VictoriaMetrics]     # accountID -> its storage
    tokens: dict[str, str]                  # vmauth user name -> bearer token

    @property
    def import_url(self) -> str:
        return f"{self.vmauth_url}/api/v1/import"

    def select_url(self, tenant: int) -> str:
        return f"{self.vmauth_url}/select/{tenant}/prometheus"


def nginx_config(tmp: Path, insert_port: int, select_port: int, tenants: dict[int, int]) -> Path:
    def routes(kind: str, api: str) -> str:
        return "\n".join(
            f"        location ~ ^/{kind}/{tenant}/prometheus/({api})$ {{\n"
            f"            proxy_pass http://127.0.0.1:{port}/$1$is_args$args;\n        }}"
            for tenant, port in tenants.items())

    temp = tmp / "nginx-temp"
    temp.mkdir()
    config = tmp / "nginx.conf"
    config.write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    client_max_body_size 64m;
    proxy_http_version 1.1;
    server {{  # vminsert's URL layout
        listen 127.0.0.1:{insert_port};
{routes("insert", "api/v1/import")}
        location / {{ return 400 "unsupported path requested\\n"; }}
    }}
    server {{  # vmselect's
        listen 127.0.0.1:{select_port};
{routes("select", "api/v1/export")}
        location / {{ return 400 "unsupported path requested\\n"; }}
    }}
}}
""")
    return config


def vmauth_config(example: dict[str, object], insert: str, select: str, tokens: dict[str, str]) -> dict[str, object]:
    users = []
    for user in example["users"]:  # type: ignore[attr-defined]
        user = dict(user)
        user["bearer_token"] = tokens[user["name"]]
        user["url_map"] = [{**route, "url_prefix": route["url_prefix"]
                            .replace("http://vminsert:8480", insert).replace("http://vmselect:8481", select)}
                           for route in user["url_map"]]
        users.append(user)
    return {"users": users}


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    vm_binary = vm_available() or require_tool("victoria-metrics", "victoria-metrics")
    vmauth = require_tool("vmauth", "victoria-metrics")
    nginx = shutil.which("nginx") or require_tool("/usr/sbin/nginx", "nginx")
    tenants = {n: VictoriaMetrics(vm_binary, tmp_path / f"vm-tenant-{n}", free_port(), dedup=False) for n in (1, 2)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for vm in tenants.values():
            vm.start()
        insert_port, select_port, vmauth_port = free_port(), free_port(), free_port()
        config = nginx_config(tmp_path, insert_port, select_port, {n: vm.port for n, vm in tenants.items()})
        procs.append(subprocess.Popen([nginx, "-p", str(tmp_path), "-e", str(tmp_path / "nginx-error.log"),
                                       "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        wait_for_port("127.0.0.1", insert_port, proc=procs[-1])
        wait_for_port("127.0.0.1", select_port, proc=procs[-1])

        example = yaml.safe_load(EXAMPLE.read_text())
        tokens = {user["name"]: secrets.token_urlsafe(24) for user in example["users"]}
        auth = tmp_path / "vmauth.yml"
        auth.write_text(yaml.safe_dump(vmauth_config(example, f"http://127.0.0.1:{insert_port}",
                                                     f"http://127.0.0.1:{select_port}", tokens)))
        log = (tmp_path / "vmauth.log").open("ab")
        procs.append(subprocess.Popen([vmauth, f"-httpListenAddr=127.0.0.1:{vmauth_port}", f"-auth.config={auth}",
                                       "-loggerLevel=WARN"], stdout=log, stderr=subprocess.STDOUT))
        log.close()
        wait_for_port("127.0.0.1", vmauth_port, proc=procs[-1])
        yield Cluster(f"http://127.0.0.1:{vmauth_port}", tenants, tokens)
    finally:
        for proc in reversed(procs):
            stop(proc, signal.SIGINT if proc.args[0] == vmauth else signal.SIGQUIT)  # type: ignore[index]
        for vm in tenants.values():
            vm.stop()


def tenant_samples(vm: VictoriaMetrics, expected: int = 0, timeout: float = 15.0) -> Counter[tuple[str, str, int, float]]:
    """(device_id, name, timestamp, value) -> how many times the tenant's storage holds it, once
    it holds ``expected`` (VM 1.79 makes just-imported rows searchable up to ~1 s after a flush)."""
    deadline = time.monotonic() + timeout
    while True:
        vm.flush()
        held = Counter((dict(labels).get("device_id", "<none>"), name, ts, value)
                       for name, labels, ts, value in vm.samples())
        if sum(held.values()) >= expected or time.monotonic() > deadline:
            return held
        time.sleep(0.2)


def verify(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli("metrics-collector"), "verify", "--config", str(config), "--since", "1h",
                           "--settle", "0s", *extra], capture_output=True, text=True, timeout=120, env=ENV, check=False)


def test_example_routes_each_device_to_its_tenant_and_readers_to_one_tenant_each() -> None:
    users = {u["name"]: u for u in yaml.safe_load(EXAMPLE.read_text())["users"]}
    assert len({u["bearer_token"] for u in users.values()}) == len(users), "one token per user"
    for device, tenant in TENANTS.items():
        (route,) = users[device]["url_map"]
        assert route["src_paths"] == ["/api/v1/import"]
        assert route["url_prefix"] == f"http://vminsert:8480/insert/{tenant}/prometheus?extra_label=device_id={device}"
        (read,) = users[f"reader-tenant-{tenant}"]["url_map"]
        assert read == {"src_paths": [f"/select/{tenant}/prometheus/api/v1/export"], "url_prefix": "http://vmselect:8481"}


def test_every_sample_once_in_its_tenant_verified_through_vmselect_and_a_wrong_token_refused(
        cluster: Cluster, tmp_path: Path) -> None:
    configs: dict[str, Path] = {}
    for device in TENANTS:
        box = tmp_path / device
        box.mkdir()
        token = write_token(box / "api-token", cluster.tokens[device])
        configs[device] = write_config(box, device, cluster.import_url, token)
        log = box / "agent.log"
        run_agent_until(configs[device], log, lambda log=log: len(uploads(log)) >= 3)
        assert pending(box / "agent.db", cluster.import_url) == 0 and dead_letters(box / "agent.db") == 0
        assert cluster.tokens[device] not in log.read_text()

    # Each tenant holds its own device's samples, every one exactly once, and nothing else.
    for device, tenant in TENANTS.items():
        stored = stored_in_agent(tmp_path / device / "agent.db")
        held = tenant_samples(cluster.tenants[tenant], len(stored))
        assert {d for d, *_ in held} == {device}, f"tenant {tenant} holds {sorted({d for d, *_ in held})}"
        assert max(held.values()) == 1, "a sample stored twice"
        assert {(n, ts, v) for _, n, ts, v in held} == stored

    # verify reads back from the tenant's vmselect path, with that tenant's reader token.
    readers = {tenant: write_token(tmp_path / f"reader-{tenant}", cluster.tokens[f"reader-tenant-{tenant}"])
               for tenant in TENANTS.values()}
    for device, tenant in TENANTS.items():
        ok = verify(configs[device], "--query-url", cluster.select_url(tenant), "--query-token-file", str(readers[tenant]))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert f"/select/{tenant}/prometheus/api/v1/export" in ok.stdout
        assert "missing 0; duplicated 0" in ok.stdout and "exactly once" in ok.stdout, ok.stdout
        assert cluster.tokens[f"reader-tenant-{tenant}"] not in ok.stdout + ok.stderr

    device_a, device_b = TENANTS
    # The other tenant does not have them: verify says so.
    elsewhere = verify(configs[device_a], "--query-url", cluster.select_url(2), "--query-token-file", str(readers[2]))
    assert elsewhere.returncode == 1 and "PROBLEMS FOUND" in elsewhere.stdout, elsewhere.stdout + elsewhere.stderr
    # A reader token reaches its own tenant only; a device token cannot export at all.
    across = verify(configs[device_a], "--query-url", cluster.select_url(1), "--query-token-file", str(readers[2]))
    assert across.returncode == 1 and "cannot export" in across.stderr, across.stdout + across.stderr
    device_token = verify(configs[device_a], "--query-url", cluster.select_url(1))
    assert device_token.returncode == 1 and "cannot export" in device_token.stderr
    for path in ("/select/1/prometheus/api/v1/export?match[]=up", "/insert/1/prometheus/api/v1/import",
                 "/api/v1/export?match[]=up"):
        status, _ = post(cluster.vmauth_url + path, b"", cluster.tokens[device_a])
        assert status >= 400, f"{path} answered {status} to a device token"

    # A wrong token is refused: the box keeps every sample, no tenant gets any of them.
    before = {tenant: tenant_samples(vm) for tenant, vm in cluster.tenants.items()}
    box = tmp_path / "stranger"
    box.mkdir()
    config = write_config(box, device_b, cluster.import_url, write_token(box / "api-token", secrets.token_urlsafe(24)))
    log, db = box / "agent.log", box / "agent.db"
    run_agent_until(config, log, lambda: len(upload_failures(log)) >= 1 and pending(db, cluster.import_url) >= 10)
    assert {f.get("http_status") for f in upload_failures(log)} <= {400, 401}
    assert dead_letters(db) == 0 and pending(db, cluster.import_url) == len(stored_in_agent(db))
    assert {tenant: tenant_samples(vm) for tenant, vm in cluster.tenants.items()} == before
