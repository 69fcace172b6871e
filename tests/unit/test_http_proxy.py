"""Proxies (issue 16): HTTPS_PROXY / HTTP_PROXY / NO_PROXY read exactly as urllib reads them,
remote.proxy over them, CONNECT for https (to a server with a private CA), credentials sent
as Proxy-Authorization and never shown. The forward proxy here is a small in-test one; the
conformance suite (tests/integration/test_transport_conformance.py) runs real tinyproxy."""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.config import parse_config
from belabox_metrics.httpclient import bypass_proxy, choose_proxy, environment_proxies
from belabox_metrics.model import Sample
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.tlsconfig import TlsSettings
from belabox_metrics.upload import verify
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import HttpTransport, TransportError
from belabox_metrics.upload.uploader import Uploader, UploadPolicy
from belabox_metrics.validation import ConfigError
from tests.tlsfiles import Pki, make_pki

PASSWORD = "pr0xy-s3cret-pass"

ENVIRONMENTS = [
    {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "example.org,.internal"},
    {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"},
    {"HTTPS_PROXY": "http://upper:2", "https_proxy": ""},
    {"http_proxy": "p:8080", "no_proxy": "*"},
    {"HTTP_PROXY": "http://p:1", "REQUEST_METHOD": "GET"},
    {"ALL_PROXY": "http://all:1", "no_proxy": " Metrics.Example.org , 127.0.0.1:8428"},
    {},
]
HOSTS = ["example.org", "sub.example.org", "notexample.org", "a.internal", "internal", "127.0.0.1:8428",
         "127.0.0.1", "metrics.example.org:443", "METRICS.example.org"]


@pytest.mark.parametrize("environ", ENVIRONMENTS)
def test_environment_is_read_exactly_as_urllib_reads_it(environ: dict[str, str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name == "REQUEST_METHOD":
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    ours = environment_proxies(environ)
    assert ours == urllib.request.getproxies_environment()
    for host in HOSTS:
        assert bypass_proxy(host, ours.get("no")) == urllib.request.proxy_bypass_environment(host, ours), host


def test_configured_proxy_wins_and_none_goes_direct() -> None:
    environ = {"HTTPS_PROXY": "http://env:1", "NO_PROXY": "direct.example.org"}
    assert choose_proxy("https", "x.example.org", None, environ).host == "env"  # type: ignore[union-attr]
    assert choose_proxy("https", "x.example.org", "http://conf:3128", environ).host == "conf"  # type: ignore[union-attr]
    assert choose_proxy("https", "x.example.org", "none", environ) is None
    assert choose_proxy("https", "direct.example.org", "http://conf:3128", environ) is None
    assert choose_proxy("http", "x.example.org", None, environ) is None  # no HTTP_PROXY


class ForwardProxy:
    """HTTP/1.1 forward proxy: absolute-form requests relayed, CONNECT tunnelled. Records
    each request line and its Proxy-Authorization; ``refuse`` answers 407 to everything."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.seen: list[tuple[str, str | None]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://user:{PASSWORD}@127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            try:
                buffer = b""
                while True:
                    while b"\r\n\r\n" not in buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                    self.seen.append((lines[0], fields.get("proxy-authorization")))
                    if self.refuse:
                        conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                     b"Proxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\n\r\n")
                        continue
                    method, target, _ = lines[0].split(" ", 2)
                    if method == "CONNECT":
                        host, _, port = target.rpartition(":")
                        upstream = socket.create_connection((host, int(port)), timeout=10)
                        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        self._pipe(conn, upstream, buffer)
                        return
                    length = int(fields.get("content-length", "0"))
                    while len(buffer) < length:
                        buffer += conn.recv(65536)
                    body, buffer = buffer[:length], buffer[length:]
                    parts = urllib.request.urlparse(target)
                    upstream = socket.create_connection((parts.hostname, parts.port or 80), timeout=10)
                    kept = [x for x in lines[1:] if not x.lower().startswith(("proxy-", "connection"))]
                    upstream.sendall(f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} "
                                     "HTTP/1.1\r\n".encode() + "\r\n".join([*kept, "Connection: close"]).encode()
                                     + b"\r\n\r\n" + body)
                    answer = b""
                    while chunk := upstream.recv(65536):
                        answer += chunk
                    upstream.close()
                    conn.sendall(answer)
                    return
            except OSError:
                return

    @staticmethod
    def _pipe(client: socket.socket, upstream: socket.socket, early: bytes) -> None:
        if early:
            upstream.sendall(early)

        def copy(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
        other = threading.Thread(target=copy, args=(upstream, client), daemon=True)
        other.start()
        copy(client, upstream)
        other.join(timeout=10)
        upstream.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.listener.close()


class Origin(http.server.ThreadingHTTPServer):
    def __init__(self, tls: Pki | None = None) -> None:
        self.paths: list[str] = []
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                origin.paths.append(self.path)
                body = b'{"metric":{"__name__":"x","device_id":"box"},"values":[1],"timestamps":[1000]}\n'
                self.send_response(200 if self.command == "GET" else 204)
                self.send_header("Content-Length", str(len(body) if self.command == "GET" else 0))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.server_cert, tls.server_key)
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.server_address[1]}/api/v1/import"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy()
    yield server
    server.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def test_http_through_the_environments_proxy_with_credentials(proxy: ForwardProxy) -> None:
    origin = Origin()
    try:
        transport = HttpTransport(timeout=5, environ={"HTTP_PROXY": proxy.url})
        assert transport.post(origin.url(), b"x", {}).status == 204
        transport.close()
    finally:
        origin.stop()
    line, authorization = proxy.seen[0]
    assert line.startswith(f"POST http://127.0.0.1:{origin.server_address[1]}/api/v1/import ")
    assert authorization is not None and authorization.startswith("Basic ")
    assert origin.paths == ["/api/v1/import"]


def test_https_is_tunnelled_with_connect_to_a_private_ca(proxy: ForwardProxy, pki: Pki) -> None:
    origin = Origin(tls=pki)
    try:
        transport = HttpTransport(timeout=5, tls=TlsSettings(ca_file=str(pki.ca)), environ={"HTTPS_PROXY": proxy.url})
        for _ in range(3):
            assert transport.post(origin.url("https", "localhost"), b"x", {}).status == 204
        transport.close()
    finally:
        origin.stop()
    assert proxy.seen[0][0] == f"CONNECT localhost:{origin.server_address[1]} HTTP/1.0"
    assert proxy.seen[0][1] is not None
    assert len(proxy.seen) == 1  # one tunnel, kept alive for the three requests
    assert len(origin.paths) == 3


def test_no_proxy_goes_direct_and_a_configured_proxy_wins(proxy: ForwardProxy) -> None:
    origin = Origin()
    try:
        direct = HttpTransport(timeout=5, environ={"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"})
        assert direct.post(origin.url(), b"x", {}).status == 204
        configured = HttpTransport(timeout=5, proxy=proxy.url, environ={"HTTP_PROXY": "http://127.0.0.1:9"})
        assert configured.post(origin.url(), b"x", {}).status == 204
        ignored = HttpTransport(timeout=5, proxy="none", environ={"HTTP_PROXY": "http://127.0.0.1:9"})
        assert ignored.post(origin.url(), b"x", {}).status == 204
    finally:
        origin.stop()
    assert len(proxy.seen) == 1 and len(origin.paths) == 3


def test_a_proxy_refusing_the_credentials_keeps_samples_and_shows_no_password(
        tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    refusing = ForwardProxy(refuse=True)
    config = parse_config(f"""
device: {{id: box}}
storage: {{path: {tmp_path / 'a.db'}}}
remote: {{url: "https://localhost:9/api/v1/import", format: vm-jsonl, proxy: "{refusing.url}",
          tls: {{ca_file: {pki.ca}}}}}
metrics: [{{name: cpu, interval: 5s}}]
""")
    queue = SampleQueue.open(str(tmp_path / "a.db"))
    queue.append([Sample("x", 1.0, int(time.time() * 1000))])
    transport = HttpTransport(timeout=5, tls=config.remote.tls, proxy=config.remote.proxy)
    up = Uploader(queue, transport, url=config.remote.url, fmt=wire_format("vm-jsonl", "box"),
                  clock=FakeClock(wall=time.time()), log=logging.getLogger("belabox_metrics.proxy"),
                  policy=UploadPolicy(max_attempts=1))
    try:
        with caplog.at_level(logging.INFO):
            result = up.run_cycle()
    finally:
        refusing.close()
    assert result.acknowledged == 0 and queue.pending_count(up.destination) == 1
    assert up.last_error is not None and "407" in up.last_error
    assert refusing.seen and refusing.seen[0][1] is not None  # the credentials were sent
    token = refusing.seen[0][1].split()[1]
    formatted = "\n".join(logging.Formatter("%(message)s %(args)s").format(r) for r in caplog.records)
    from belabox_metrics.logs import mask_secrets
    for surface in (up.last_error, mask_secrets(formatted), mask_secrets(f"{up.last_error} {token}")):
        assert PASSWORD not in surface and token not in surface
    queue.close()


def test_verify_reads_back_through_the_same_proxy_as_the_uploads(proxy: ForwardProxy) -> None:
    origin = Origin()
    try:
        transport = HttpTransport(timeout=5, environ={"HTTP_PROXY": proxy.url})
        lines = verify.fetch_export(transport, verify.export_url(origin.url()), "box", 0, {})
        transport.close()
    finally:
        origin.stop()
    assert lines and proxy.seen[0][0].startswith("GET http://127.0.0.1:")
    assert origin.paths[0].startswith("/api/v1/export?")


def test_a_bad_proxy_setting_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    for proxy, problem in (("https://p:3128", "only http://"), ("socks5://p:1080", "not supported"),
                           ("http://p:99999", "invalid port")):
        with pytest.raises(ConfigError, match=problem) as error:
            parse_config(f"""
device: {{id: box}}
storage: {{path: {tmp_path / 'a.db'}}}
remote: {{url: "https://m.example.org/", proxy: "{proxy}"}}
metrics: [{{name: cpu, interval: 5s}}]
""")
        assert error.value.key == "remote.proxy"


def test_an_unusable_environment_proxy_is_a_transport_error() -> None:
    transport = HttpTransport(timeout=2, environ={"HTTPS_PROXY": "https://p:3128"})
    with pytest.raises(TransportError, match="only http://"):
        transport.post("https://m.example.org/", b"", {})
