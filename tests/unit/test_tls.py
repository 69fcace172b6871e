"""TLS for fleets (issue 16): a private CA, mutual TLS, the name to verify, for uploads and for
a wss:// belaUI source; verification always on; check-config reads and checks every file.
Certificates are made by the real `openssl` (tests/tlsfiles.py); the servers are Python's
ssl on loopback (the conformance suite runs nginx and caddy)."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.collectors.srt.websocket import WebSocket, WebSocketError
from belabox_metrics.model import Sample
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.tlsconfig import TlsSettings
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import HttpTransport, TransportError
from belabox_metrics.upload.uploader import Uploader, UploadPolicy
from tests.helpers import REPO_ROOT, cli
from tests.tlsfiles import Pki, make_pki

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class TlsServer:
    """Answers 204 to each request (or the websocket handshake) over TLS; records the SNI
    and the client certificate's subject of each connection."""

    def __init__(self, pki: Pki, *, require_client_cert: bool = False, websocket: bool = False) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        if require_client_cert:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(pki.ca)
        self.sni: list[str | None] = []
        self.clients: list[str] = []
        self.requests = 0
        self.websocket = websocket
        self.context.sni_callback = lambda sock, name, ctx: self.sni.append(name)  # type: ignore[assignment,func-returns-value]
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        with conn:
            peer = conn.getpeercert()
            if peer:
                self.clients.append(dict(x[0] for x in peer["subject"])["commonName"])  # type: ignore[arg-type,index]
            buffer = b""
            try:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buffer += data
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    fields = {k.strip().lower(): v.strip() for k, _, v in
                              (x.partition(":") for x in head.decode("latin-1").split("\r\n")[1:])}
                    length = int(fields.get("content-length", "0"))
                    while len(buffer) < length:
                        buffer += conn.recv(65536)
                    buffer = buffer[length:]
                    self.requests += 1
                    if self.websocket:
                        accept = base64.b64encode(hashlib.sha1((fields["sec-websocket-key"] + GUID).encode()).digest())
                        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                                     + bytes([0x81, 5]) + b"hello")
                        conn.recv(1024)
                        return
                    conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            except OSError:
                return

    def url(self, host: str = "localhost", scheme: str = "https") -> str:
        return f"{scheme}://{host}:{self.port}/api/v1/import"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.listener.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def server(pki: Pki) -> Iterator[TlsServer]:
    made = TlsServer(pki)
    yield made
    made.close()


def test_a_private_ca_is_trusted_and_the_connection_kept_alive(server: TlsServer, pki: Pki) -> None:
    transport = HttpTransport(timeout=5, tls=TlsSettings(ca_file=str(pki.ca)))
    for _ in range(3):
        assert transport.post(server.url(), b"x", {}).status == 204
    assert transport.client.connections_opened == 1
    transport.close()


@pytest.mark.parametrize("which", ["system CAs", "another CA"])
def test_verification_is_always_on_and_nothing_is_acknowledged(server: TlsServer, pki: Pki, tmp_path: Path,
                                                               which: str) -> None:
    tls = TlsSettings() if which == "system CAs" else TlsSettings(ca_file=str(pki.other_ca))
    queue = SampleQueue.open(str(tmp_path / "a.db"))
    queue.append([Sample("x", 1.0, int(time.time() * 1000))])
    up = Uploader(queue, HttpTransport(timeout=5, tls=tls), url=server.url(), fmt=wire_format("vm-jsonl", "b"),
                  clock=FakeClock(wall=time.time()), log=logging.getLogger("tls"), policy=UploadPolicy(max_attempts=1))
    result = up.run_cycle()
    assert result.acknowledged == 0 and queue.pending_count(up.destination) == 1
    assert up.last_error is not None and "certificate verify failed" in up.last_error
    assert server.requests == 0
    queue.close()


def test_server_name_is_sent_and_verified(server: TlsServer, pki: Pki) -> None:
    good = HttpTransport(timeout=5, tls=TlsSettings(ca_file=str(pki.ca), server_name="metrics.test"))
    assert good.post(server.url("127.0.0.1"), b"x", {}).status == 204
    assert server.sni[-1] == "metrics.test"
    wrong = HttpTransport(timeout=5, tls=TlsSettings(ca_file=str(pki.ca), server_name="other.test"))
    with pytest.raises(TransportError, match=r"tls: .*(mismatch|match)"):
        wrong.post(server.url("127.0.0.1"), b"x", {})
    good.close()


def test_mutual_tls_needs_the_client_certificate(pki: Pki) -> None:
    server = TlsServer(pki, require_client_cert=True)
    try:
        anonymous = HttpTransport(timeout=5, tls=TlsSettings(ca_file=str(pki.ca)))
        with pytest.raises(TransportError):
            anonymous.post(server.url(), b"x", {})
        mtls = HttpTransport(timeout=5, tls=TlsSettings(ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                                                        key_file=str(pki.client_key)))
        assert mtls.post(server.url(), b"x", {}).status == 204
        assert server.clients == ["belabox-001"] and server.requests == 1
    finally:
        server.close()


def test_wss_belaui_source_uses_its_tls_options(pki: Pki) -> None:
    server = TlsServer(pki, require_client_cert=True, websocket=True)
    try:
        url = f"wss://127.0.0.1:{server.port}/"
        with pytest.raises((WebSocketError, OSError)):
            WebSocket.connect(url, 5, TlsSettings(ca_file=str(pki.other_ca))).close()
        ws = WebSocket.connect(url, 5, TlsSettings(ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                                                   key_file=str(pki.client_key), server_name="metrics.test"))
        assert ws.recv(5) == "hello"
        ws.close()
        assert server.sni[-1] == "metrics.test" and server.clients == ["belabox-001"]
    finally:
        server.close()


# -- check-config ---------------------------------------------------------------------------

def check_config(tmp_path: Path, remote_tls: str, source_tls: str = "") -> subprocess.CompletedProcess[str]:
    password = tmp_path / "belaui-password"
    password.write_text("pw\n")
    os.chmod(password, 0o600)
    source = ""
    if source_tls:
        source = f"""
  - name: srt
    interval: 5s
    sources:
      - {{type: belaui, url: "wss://127.0.0.1:1/", password_file: {password}, tls: {source_tls}}}"""
    config = tmp_path / "config.yaml"
    config.write_text(f"""
device: {{id: box}}
storage: {{path: {tmp_path / 'a.db'}}}
remote: {{url: "https://metrics.test:8443/api/v1/import", format: vm-jsonl, tls: {remote_tls}}}
metrics:
  - {{name: cpu, interval: 5s}}{source}
""")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for name in ("HTTPS_PROXY", "https_proxy"):
        env.pop(name, None)
    return subprocess.run([*cli("metrics-collector"), "--config", str(config), "check-config"],
                          capture_output=True, text=True, timeout=60, env=env)


def test_check_config_reads_the_files_and_says_what_it_found(pki: Pki, tmp_path: Path) -> None:
    done = check_config(tmp_path, f"{{ca_file: {pki.ca}, cert_file: {pki.client_cert}, key_file: {pki.client_key}, "
                                  "server_name: metrics.test}",
                        f"{{ca_file: {pki.ca}}}")
    assert done.returncode == 0, done.stderr
    assert f"CA {pki.ca}, client certificate {pki.client_cert}, server name metrics.test (files read: OK)" in done.stdout
    assert "wss://127.0.0.1:1" in done.stdout


def test_check_config_names_the_key_and_the_fix_for_each_bad_file(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    open_key = tmp_path / "open.key"
    open_key.write_bytes(pki.client_key.read_bytes())
    os.chmod(open_key, 0o644)
    cases = [
        (f"{{ca_file: {tmp_path / 'missing.pem'}}}", "", "remote.tls.ca_file", "does not exist"),
        (f"{{ca_file: {garbage}}}", "", "remote.tls.ca_file", "no usable CA certificate"),
        (f"{{cert_file: {pki.client_cert}}}", "", "remote.tls.key_file", "needs both cert_file and key_file"),
        (f"{{cert_file: {pki.client_cert}, key_file: {open_key}}}", "", "remote.tls.key_file", "chmod 600"),
        (f"{{cert_file: {pki.client_cert}, key_file: {pki.server_key}}}", "", "remote.tls.cert_file",
         "matching, unencrypted PEM private key"),
        ("{server_name: 'https://x'}", "", "remote.tls.server_name", "not a host name"),
    ]
    for remote_tls, source_tls, key, problem in cases:
        done = check_config(tmp_path, remote_tls, source_tls)
        assert done.returncode == 2, (remote_tls, done.stdout)
        assert key in done.stderr and problem in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_bad_tls_file_of_a_wss_source_is_a_warning_as_the_agent_would_run_degraded(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    done = check_config(tmp_path, "{}", f"{{ca_file: {garbage}}}")
    assert done.returncode == 0, done.stderr
    assert "metrics[1].sources[0].tls.ca_file" in done.stdout and "no usable CA certificate" in done.stdout
