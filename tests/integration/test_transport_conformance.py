"""Transport conformance (issue 16): uploads through real servers and proxies that sit in front
of VictoriaMetrics in fleets, each case ending with an audit.

- real nginx with TLS (a CA and certificates made by openssl in the test's temp dir), a
  bearer token checked, keep-alive, and `keepalive_timeout 0` (a new connection per request);
- nginx answering every body chunked with a trailer (sub_filter + add_trailer) while
  VictoriaMetrics refuses one sample: 400s and 204s interleave on one kept-alive connection;
- real caddy as a second TLS server;
- real squid as remote.proxy (CONNECT) in front of nginx;
- real tinyproxy as HTTPS_PROXY (CONNECT, Basic credentials) in front of nginx requiring a
  client certificate (mutual TLS), driven by the real agent (`metrics-collector run`) and
  checked with `metrics-collector verify` through the same proxy.

Audit of each case: every sample the agent recorded as sent is in VictoriaMetrics exactly
once with its value, nothing else is, and the requests per cycle stay bounded (and, where
keep-alive is on, one connection carried them). Tools missing: skipped with the reason, or
a failure when CI=true.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from belabox_metrics.clock import SystemClock
from belabox_metrics.logs import redact_url
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.tlsconfig import TlsSettings
from belabox_metrics.upload import verify
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import HttpTransport
from belabox_metrics.upload.uploader import Uploader, UploadPolicy
from tests.helpers import cli, free_port, require_tool
from tests.servers import ENV, TOKEN, Daemon, nginx_connections, start_nginx
from tests.tlsfiles import Pki, make_pki
from tests.vm import VictoriaMetrics, vm_available

DEVICE = "conformance-box"

PROXY_USER, PROXY_PASSWORD = "fleet", "pr0xy-pass-987"


# -- real servers -----------------------------------------------------------------------------

def start_caddy(tmp: Path, pki: Pki, upstream: int) -> Daemon:
    binary = require_tool("caddy", "caddy")
    root = tmp / "caddy"
    root.mkdir()
    port = free_port()
    (root / "Caddyfile").write_text(f"""{{
  admin off
  auto_https off
  http_port {free_port()}
  https_port {port}
  storage file_system {root}/data
  log {{
    output file {root}/caddy.log
  }}
}}
https://localhost:{port} {{
  bind 127.0.0.1
  tls {pki.server_cert} {pki.server_key}
  @token header Authorization "Bearer {TOKEN}"
  handle @token {{
    reverse_proxy 127.0.0.1:{upstream}
  }}
  respond 401
}}
""")
    env = ENV | {"HOME": str(root), "XDG_DATA_HOME": str(root / "data"), "XDG_CONFIG_HOME": str(root / "config")}
    return Daemon([binary, "run", "--config", str(root / "Caddyfile"), "--adapter", "caddyfile"], port,
                  root / "stdout.log", env)


def start_tinyproxy(tmp: Path, allowed_port: int) -> Daemon:
    binary = require_tool("tinyproxy", "tinyproxy")
    root = tmp / "tinyproxy"
    root.mkdir()
    os.chmod(root, 0o777)
    port = free_port()
    user = "User root\nGroup root\n" if os.geteuid() == 0 else ""
    (root / "tinyproxy.conf").write_text(f"""{user}Port {port}
Listen 127.0.0.1
Timeout 60
MaxClients 20
LogFile "{root}/tinyproxy.log"
LogLevel Connect
PidFile "{root}/tinyproxy.pid"
Allow 127.0.0.1
BasicAuth {PROXY_USER} {PROXY_PASSWORD}
ConnectPort {allowed_port}
""")
    return Daemon([binary, "-d", "-c", str(root / "tinyproxy.conf")], port, root / "stdout.log")


def raw_exchange(port: int, pki: Pki, request: bytes) -> bytes:
    """Bytes as the server sends them (to see its framing: chunked, trailers)."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as conn:
        conn.sendall(request)
        answer = b""
        while data := conn.recv(65536):
            answer += data
    return answer


def start_squid(tmp: Path, allowed_port: int) -> Daemon:
    binary = require_tool("/usr/sbin/squid" if os.path.exists("/usr/sbin/squid") else "squid", "squid")
    # Squid drops to its own user, which cannot enter pytest's 0700 temp dirs: a dir of its
    # own under the system temp dir, removed when it stops.
    root = Path(tempfile.mkdtemp(prefix="belabox-squid-"))
    os.chmod(root, 0o777)
    (tmp / "squid").symlink_to(root)
    port = free_port()
    (root / "squid.conf").write_text(f"""http_port 127.0.0.1:{port}
pid_filename {root}/squid.pid
cache_log {root}/cache.log
access_log stdio:{root}/access.log
coredump_dir {root}
cache deny all
shutdown_lifetime 1 seconds
acl local src 127.0.0.1/32
acl tls_port port {allowed_port}
acl CONNECT method CONNECT
http_access deny CONNECT !tls_port
http_access allow local
http_access deny all
""")
    return Daemon([binary, "-N", "-f", str(root / "squid.conf")], port, tmp / "squid-stdout.log", cleanup=root)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    binary = vm_available() or require_tool("victoria-metrics", "victoria-metrics")
    server = VictoriaMetrics(binary, tmp_path / "vm-data", free_port())
    # One sample in the chunked case is refused by VictoriaMetrics itself: lines over 100 kB.
    server.flags += ["-import.maxLineLen=100000", "-maxLabelValueLen=400000"]
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- the audit --------------------------------------------------------------------------------

def sent_and_dead(db: Path, url: str) -> tuple[dict[verify.SampleKey, float], int]:
    queue = SampleQueue.open(str(db))
    try:
        destination = redact_url(url)
        return verify.sent_samples(queue, destination, DEVICE, 0), len(queue.dead_letters(destination))
    finally:
        queue.close()


def audit(vm: VictoriaMetrics, db: Path, url: str, expect_dead: int = 0) -> int:
    """Every sample recorded as sent to ``url`` is in VM exactly once with its value; nothing
    else is (so no dead letter is). Returns how many samples were checked."""
    sent, dead = sent_and_dead(db, url)
    assert dead == expect_dead
    deadline = time.monotonic() + 20
    while True:
        rows = vm.samples(f'{{device_id="{DEVICE}"}}')
        seen = Counter((n, labels, ts) for n, labels, ts, _ in rows)
        if set(sent) <= set(seen) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sent, "nothing was sent"
    assert max(seen.values()) == 1, "a sample is stored twice"
    missing = set(sent) - set(seen)
    assert not missing, f"{len(missing)} of {len(sent)} sent samples are not in VictoriaMetrics"
    assert set(seen) == set(sent), f"in VictoriaMetrics but not recorded as sent: {sorted(set(seen) - set(sent))[:3]}"
    for n, labels, ts, value in rows:
        assert math.isclose(value, sent[(n, labels, ts)], rel_tol=1e-11, abs_tol=1e-12)
    return len(sent)


def backlog(db: Path, count: int, series: int = 10) -> None:
    queue = SampleQueue.open(str(db))
    now_ms = int(time.time() * 1000)
    rng = random.Random(count)
    queue.append([Sample("conformance.value", round(rng.uniform(0, 100), 3), now_ms - 900_000 + (i // series) * 10,
                         make_labels(n=str(i % series))) for i in range(count)])
    queue.close()


def upload_all(db: Path, url: str, tls: TlsSettings, batch: int = 500, cycles: int = 50,
               proxy: str | None = "none") -> tuple[Uploader, list[int]]:
    """The real Uploader on the real HttpTransport, cycle after cycle until nothing is pending."""
    queue = SampleQueue.open(str(db))
    transport = HttpTransport(timeout=10, tls=tls, proxy=proxy)
    up = Uploader(queue, transport, url=url, fmt=wire_format("vm-jsonl", DEVICE), clock=SystemClock(),
                  log=logging.getLogger("conformance"), headers={"Authorization": f"Bearer {TOKEN}"},
                  policy=UploadPolicy(max_samples=batch, max_attempts=2, backoff_base=0.05, backoff_max=0.2))
    per_cycle = []
    try:
        for _ in range(cycles):
            before = up.requests_total
            up.run_cycle()
            per_cycle.append(up.requests_total - before)
            if queue.pending_count(up.destination) == 0:
                break
            up.hold_until = None  # a real clock: do not wait out a refusal's backoff here
        assert queue.pending_count(up.destination) == 0, up.last_error
    finally:
        transport.close()
        queue.close()
    return up, per_cycle


# -- the cases --------------------------------------------------------------------------------

@pytest.mark.parametrize("keepalive", [True, False], ids=["keep-alive", "keepalive_timeout 0"])
def test_nginx_tls_with_a_token(vm: VictoriaMetrics, pki: Pki, tmp_path: Path, keepalive: bool) -> None:
    nginx = start_nginx(tmp_path, pki, vm.port, keepalive=keepalive)
    db = tmp_path / "agent.db"
    backlog(db, 5000)
    url = f"https://localhost:{nginx.port}/api/v1/import"
    try:
        up, per_cycle = upload_all(db, url, TlsSettings(ca_file=str(pki.ca)))
    finally:
        nginx.stop()
    assert audit(vm, db, url) == 5000
    assert up.requests_total == 10 and per_cycle[0] <= 10  # 5000 / 500, no retry, no bisection
    connections = nginx_connections(nginx)
    assert sum(connections.values()) == 10
    assert len(connections) == (1 if keepalive else 10)


def test_nginx_chunked_answers_with_trailers_and_a_sample_vm_refuses(vm: VictoriaMetrics, pki: Pki,
                                                                     tmp_path: Path) -> None:
    nginx = start_nginx(tmp_path, pki, vm.port, chunked=True)
    db = tmp_path / "agent.db"
    backlog(db, 2000)
    queue = SampleQueue.open(str(db))
    long_label = make_labels(n="long", note="x" * 300_000)  # its line is over VM's -import.maxLineLen
    queue.append([Sample("conformance.value", 42.0, int(time.time() * 1000) - 900_000 + 1_003, long_label)])
    queue.close()
    url = f"https://localhost:{nginx.port}/api/v1/import"
    try:
        too_long = b"x" * 300_100 + b"\n"  # VictoriaMetrics refuses it with a body: nginx chunks it
        raw_answer = raw_exchange(nginx.port, pki, b"POST /api/v1/import HTTP/1.1\r\nHost: localhost\r\n"
                                  b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: "
                                  + str(len(too_long)).encode() + b"\r\nConnection: close\r\n\r\n" + too_long)
        up, per_cycle = upload_all(db, url, TlsSettings(ca_file=str(pki.ca)), batch=400)
    finally:
        nginx.stop()
    assert audit(vm, db, url, expect_dead=1) == 2000
    assert b"transfer-encoding: chunked" in raw_answer.lower() and b"\r\n0\r\nX-Upstream-Status: 400" in raw_answer
    # The refusal came back chunked, with a trailer, and the connection stayed in step.
    statuses = Counter(line.split()[2] for line in (nginx.log.parent / "access.log").read_text().splitlines())
    assert statuses["400"] >= 2 and statuses["204"] >= 5
    assert len(nginx_connections(nginx)) == 2  # the probe's, and one kept alive for every upload
    assert max(per_cycle) <= 2 * math.ceil(math.log2(400)) + 2 + 3 + 6  # bisection budget + settling + batches
    assert up.dead_total == 1


def test_caddy_tls(vm: VictoriaMetrics, pki: Pki, tmp_path: Path) -> None:
    caddy = start_caddy(tmp_path, pki, vm.port)
    db = tmp_path / "agent.db"
    backlog(db, 3000)
    url = f"https://localhost:{caddy.port}/api/v1/import"
    try:
        up, _ = upload_all(db, url, TlsSettings(ca_file=str(pki.ca)))
    finally:
        caddy.stop()
    assert audit(vm, db, url) == 3000
    assert up.requests_total == 6 and up.failures_total == 0


def test_squid_as_remote_proxy_tunnels_to_nginx(vm: VictoriaMetrics, pki: Pki, tmp_path: Path) -> None:
    nginx = start_nginx(tmp_path, pki, vm.port)
    squid = start_squid(tmp_path, nginx.port)
    db = tmp_path / "agent.db"
    backlog(db, 3000)
    url = f"https://localhost:{nginx.port}/api/v1/import"
    try:
        up, _ = upload_all(db, url, TlsSettings(ca_file=str(pki.ca)), proxy=f"http://127.0.0.1:{squid.port}")
        squid.stop()
        tunnels = [line for line in (tmp_path / "squid" / "access.log").read_text().splitlines() if "CONNECT" in line]
    finally:
        squid.stop()
        squid.remove()
        nginx.stop()
    assert audit(vm, db, url) == 3000
    assert up.requests_total == 6 and up.failures_total == 0
    assert len(tunnels) == 1 and f"localhost:{nginx.port}" in tunnels[0]
    assert len(nginx_connections(nginx)) == 1


def test_the_agent_through_tinyproxy_to_nginx_with_mutual_tls(vm: VictoriaMetrics, pki: Pki, tmp_path: Path) -> None:
    """The production path, run as users run it: `metrics-collector run` with HTTPS_PROXY in
    its environment, https to nginx requiring a client certificate, a token file; then
    `metrics-collector verify` through the same proxy."""
    nginx = start_nginx(tmp_path, pki, vm.port, client_cert=True)
    proxy = start_tinyproxy(tmp_path, nginx.port)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    os.chmod(token, 0o600)
    config = tmp_path / "config.yaml"
    config.write_text(f"""
device: {{id: {DEVICE}}}
storage: {{path: {tmp_path / 'agent.db'}}}
remote:
  url: https://localhost:{nginx.port}/api/v1/import
  format: vm-jsonl
  interval: 1s
  timeout: 5s
  token_file: {token}
  tls: {{ca_file: {pki.ca}, cert_file: {pki.client_cert}, key_file: {pki.client_key}}}
health: {{listen: "127.0.0.1:{free_port()}"}}
logging: {{level: info, format: json}}
metrics:
  - {{name: cpu.temperature, interval: 200ms, mock: true}}
  - {{name: srt.packet_loss, interval: 200ms, mock: true}}
""")
    env = ENV | {"HTTPS_PROXY": f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"}
    log = tmp_path / "agent.log"
    try:
        checked = subprocess.run([*cli("metrics-collector"), "--config", str(config), "check-config"], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
        assert f"proxy:   http://127.0.0.1:{proxy.port} (from HTTPS_PROXY)" in checked.stdout
        assert PROXY_PASSWORD not in checked.stdout
        with log.open("ab") as out:
            agent = subprocess.Popen([*cli("metrics-collector"), "run", "--config", str(config)], env=env,
                                     stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and log.read_text().count('"uploaded"') < 8:
                assert agent.poll() is None, log.read_text()[-2000:]
                time.sleep(0.2)
        finally:
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=60) == 0
        text = log.read_text()
        assert text.count('"uploaded"') >= 8, text[-2000:]
        assert PROXY_PASSWORD not in text and TOKEN not in text
        deadline = time.monotonic() + 30
        verify_runs = 0
        while True:  # VictoriaMetrics makes the newest rows searchable a little after a flush
            vm.flush()
            verify_runs += 1
            verified = subprocess.run([*cli("metrics-collector"), "--config", str(config), "verify", "--since",
                                       "10m", "--settle", "0s"], env=env, capture_output=True, text=True, timeout=120)
            if verified.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "exactly once" in verified.stdout
    finally:
        proxy.stop()
        nginx.stop()
    audit(vm, tmp_path / "agent.db", f"https://localhost:{nginx.port}/api/v1/import")
    # Every request went through tinyproxy's tunnel, kept alive: the agent's uploads on one
    # connection (a reconnect at most), verify's export on its own.
    connects = len(re.findall(r"Request \(file descriptor \d+\): CONNECT localhost:", (tmp_path / "tinyproxy"
                                                                                      / "tinyproxy.log").read_text()))
    uploads = text.count('"uploaded"')
    per_connection = nginx_connections(nginx)
    assert verify_runs + 1 <= connects <= verify_runs + 2 and len(per_connection) == connects
    assert sum(per_connection.values()) == uploads + verify_runs and max(per_connection.values()) >= uploads // 2
