"""metrics-receiver as a real subprocess on loopback, driven by a plain HTTP client."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from belabox_metrics.model import make_labels
from belabox_metrics.receiver.storage import read_samples
from belabox_metrics.timefmt import format_ms, parse_ms
from tests.helpers import cli, free_port, wait_for_port

STOP_TIMEOUT_S = 10.0


@dataclass
class Receiver:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    db: Path
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            return send(conn, method, path, body, headers)
        finally:
            conn.close()

    def post(self, body: bytes, **headers: str) -> tuple[int, dict[str, str], Any]:
        merged = {"Content-Type": "application/json"}
        merged.update({k.replace("_", "-"): v for k, v in headers.items()})
        return self.request("POST", "/api/metrics", body, merged)

    def sample_count(self) -> int:
        status, _, answer = self.request("GET", "/health")
        assert status == 200, answer
        return int(answer["samples"])

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
            raise


def send(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    raw = response.read()
    content_type = response.getheader("Content-Type", "")
    assert content_type.startswith("application/json"), (response.status, content_type, raw[:200])
    return response.status, dict(response.getheaders()), json.loads(raw)


def start_receiver(tmp: Path, *extra: str, host: str = "127.0.0.1") -> Receiver:
    port = free_port(host)
    db = tmp / "receiver.db"
    log = tmp / "receiver.log"
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [*cli("metrics-receiver"), "--listen", listen, "--db", str(db), *extra],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    receiver = Receiver(proc, host, port, db, log)
    try:
        wait_for_port(host, port, proc=proc)
    except Exception:
        receiver.stop()
        raise
    return receiver


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    server = start_receiver(tmp_path_factory.mktemp("receiver"))
    yield server
    assert server.stop() == 0, server.log_text()


def now_stamp(offset_ms: int = 0) -> str:
    return format_ms(int(time.time() * 1000) - 60_000 + offset_ms)


def batch(device: str, count: int = 3, **extra_labels: str) -> dict[str, Any]:
    metrics = []
    for i in range(count):
        labels = {"zone": "soc-thermal", "i": str(i), **extra_labels}
        metrics.append({"name": "cpu.temperature", "value": 40 + i / 2,
                        "timestamp": now_stamp(i), "labels": labels})
    return {"device_id": device, "timestamp": now_stamp(), "metrics": metrics}


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


def stored_for(receiver: Receiver, device: str) -> list[tuple[Any, ...]]:
    return [row for row in read_samples(receiver.db) if row[0] == device]


def test_good_batch_is_stored(receiver: Receiver) -> None:
    document = batch("good-batch")
    status, _, answer = receiver.post(encode(document))
    assert (status, answer) == (200, {"success": True, "received": 3, "stored": 3,
                                      "duplicates": 0})
    expected = sorted(
        ("good-batch", m["name"], make_labels(m["labels"]), parse_ms(m["timestamp"]), m["value"])
        for m in document["metrics"]
    )
    assert stored_for(receiver, "good-batch") == expected
    assert "device=good-batch received=3 stored=3 duplicates=0" in receiver.log_text()


def test_same_batch_twice_is_stored_once(receiver: Receiver) -> None:
    body = encode(batch("resend"))
    first = receiver.post(body)
    second = receiver.post(body)
    assert first[:2][0] == 200 and first[2]["stored"] == 3
    assert second[0] == 200
    assert second[2] == {"success": True, "received": 3, "stored": 0, "duplicates": 3}
    assert len(stored_for(receiver, "resend")) == 3


def test_partly_new_batch_counts_new_and_duplicate_rows(receiver: Receiver) -> None:
    document = batch("overlap", count=2)
    receiver.post(encode(document))
    document["metrics"].append({"name": "mem.used", "value": 1, "timestamp": now_stamp()})
    status, _, answer = receiver.post(encode(document))
    assert (status, answer["received"], answer["stored"], answer["duplicates"]) == (200, 3, 1, 2)


def test_gzip_body_is_accepted(receiver: Receiver) -> None:
    status, _, answer = receiver.post(gzip.compress(encode(batch("gzipped"))),
                                      Content_Encoding="gzip")
    assert (status, answer["stored"]) == (200, 3)


def test_empty_batch_is_received_zero(receiver: Receiver) -> None:
    document = {"device_id": "empty", "timestamp": now_stamp(), "metrics": []}
    assert receiver.post(encode(document))[2] == {"success": True, "received": 0, "stored": 0,
                                                 "duplicates": 0}


def bad_value_batch() -> bytes:
    document = batch("bad-value", count=5)
    document["metrics"][3]["value"] = True
    return encode(document)


def huge_body() -> bytes:
    return b'{"pad": "' + b"x" * (4 * 1024 * 1024) + b'"}'


@pytest.mark.parametrize(
    ("case", "make_request", "status", "message"),
    [
        ("bad json", lambda: ("POST", b'{"device_id": ', {}), 400, "body: malformed JSON"),
        ("NaN", lambda: ("POST", encode(batch("nan")).replace(b"40.0", b"NaN"), {}), 400,
         "body: NaN is not valid JSON"),
        ("one bad item", lambda: ("POST", bad_value_batch(), {}), 400,
         "metrics[3].value: must be a finite number"),
        ("huge", lambda: ("POST", huge_body(), {}), 413, "at most 4194304 allowed"),
        ("gzip bomb",
         lambda: ("POST", gzip.compress(b" " * (256 * 1024 * 1024), compresslevel=9),
                  {"Content-Encoding": "gzip"}),
         413, "after gzip decompression"),
        ("bad gzip", lambda: ("POST", b"not gzip", {"Content-Encoding": "gzip"}), 400,
         "body: invalid gzip data"),
        ("brotli", lambda: ("POST", b"{}", {"Content-Encoding": "br"}), 415,
         "Content-Encoding br not supported"),
        ("text/plain", lambda: ("POST", encode(batch("text")), {"Content-Type": "text/plain"}),
         415, "Content-Type must be application/json"),
        ("no content type", lambda: ("POST", encode(batch("none")), {"Content-Type": ""}), 415,
         "Content-Type must be application/json"),
        ("latin-1", lambda: ("POST", encode(batch("l1")),
                             {"Content-Type": "application/json; charset=latin-1"}),
         415, "charset must be utf-8"),
        ("GET", lambda: ("GET", None, {}), 405, "method GET not allowed on /api/metrics"),
        ("PUT", lambda: ("PUT", encode(batch("put")), {}), 405, "method PUT not allowed"),
    ],
)
def test_client_errors_store_nothing(
    receiver: Receiver, case: str, make_request: Any, status: int, message: str
) -> None:
    method, body, headers = make_request()
    merged = {"Content-Type": "application/json", **headers}
    if not merged["Content-Type"]:
        del merged["Content-Type"]
    before = receiver.sample_count()
    got_status, got_headers, answer = receiver.request(method, "/api/metrics", body, merged)
    assert got_status == status, (case, answer)
    assert answer["success"] is False
    assert message in answer["error"], (case, answer)
    if status == 405:
        assert got_headers["Allow"] == "POST"
    assert receiver.sample_count() == before, case


def test_charset_parameter_utf8_is_accepted(receiver: Receiver) -> None:
    status, _, answer = receiver.post(encode(batch("charset")),
                                      Content_Type="application/json; charset=UTF-8")
    assert (status, answer["stored"]) == (200, 3)


def test_oversized_chunked_body_without_length_is_413(receiver: Receiver) -> None:
    before = receiver.sample_count()
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=10)
    try:
        chunks = iter([b"[" + b"1," * 1024 * 1024] * 3)
        conn.request("POST", "/api/metrics", body=chunks, encode_chunked=True,
                     headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["success"] is False
    finally:
        conn.close()
    assert receiver.sample_count() == before


def test_unknown_path_is_json_404(receiver: Receiver) -> None:
    status, _, answer = receiver.request("GET", "/nope")
    assert (status, answer) == (404, {"success": False, "error": "no such endpoint: /nope"})
    assert receiver.request("POST", "/api/metrics/extra", b"{}",
                            {"Content-Type": "application/json"})[0] == 404


def test_health_counts_samples(receiver: Receiver) -> None:
    before = receiver.sample_count()
    receiver.post(encode(batch("health", count=4)))
    assert receiver.sample_count() == before + 4


def test_keep_alive_serves_two_requests_on_one_connection(receiver: Receiver) -> None:
    conn = http.client.HTTPConnection(receiver.host, receiver.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"}
        first = send(conn, "POST", "/api/metrics", encode(batch("keepalive-1")), headers)
        sock = conn.sock
        assert sock is not None
        second = send(conn, "POST", "/api/metrics", encode(batch("keepalive-2")), headers)
        assert conn.sock is sock, "the second request opened a new connection"
        # A refused request does not cost the connection either.
        third = send(conn, "POST", "/api/metrics", b"{", headers)
        fourth = send(conn, "GET", "/health")
        assert conn.sock is sock
    finally:
        conn.close()
    assert (first[0], second[0], third[0], fourth[0]) == (200, 200, 400, 200)


def test_authorization_header_is_never_logged(receiver: Receiver) -> None:
    secret = "Bearer s3cret-token-do-not-log"
    status, _, _ = receiver.post(encode(batch("auth")), Authorization=secret)
    assert status == 200
    receiver.post(b"{", Authorization=secret)
    assert "s3cret-token" not in receiver.log_text()


def test_malformed_request_line_gets_4xx_and_server_keeps_serving(receiver: Receiver) -> None:
    for garbage in (b"GARBAGE\r\n\r\n", b"POST /api/metrics HTTP/9.9\r\n\r\n",
                    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\0" * 40):
        with socket.create_connection((receiver.host, receiver.port), timeout=5) as raw:
            raw.sendall(garbage)
            reply = b""
            deadline = time.monotonic() + 5
            while b"\r\n" not in reply and time.monotonic() < deadline:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                reply += chunk
        status_line = reply.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.") and status_line.split()[1].startswith(b"4"), (
            garbage[:20], reply[:200])
    assert receiver.post(encode(batch("after-garbage")))[0] == 200
    assert "Traceback" not in receiver.log_text()


def test_sender_vanishing_mid_body_is_a_one_line_log(receiver: Receiver) -> None:
    before = receiver.sample_count()
    body = encode(batch("vanished"))
    with socket.create_connection((receiver.host, receiver.port), timeout=5) as raw:
        raw.sendall(
            b"POST /api/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:20]
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while "400 body incomplete" not in receiver.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "rejected upload from 127.0.0.1: 400 body incomplete" in receiver.log_text()
    assert "Traceback" not in receiver.log_text()
    assert receiver.sample_count() == before


def test_listening_line_names_host_port_and_db(receiver: Receiver) -> None:
    log = receiver.log_text()
    assert f"listening on 127.0.0.1 port {receiver.port}" in log
    assert str(receiver.db) in log


def test_sigterm_finishes_in_flight_request_then_exits_0(tmp_path: Path) -> None:
    server = start_receiver(tmp_path)
    body = encode(batch("in-flight"))
    try:
        with socket.create_connection((server.host, server.port), timeout=10) as raw:
            raw.sendall(
                b"POST /api/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10]
            )
            time.sleep(0.3)  # the request is now being handled: its body is half-read
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            raw.sendall(body[10:])
            reply = b""
            deadline = time.monotonic() + 10
            while b"}" not in reply and time.monotonic() < deadline:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply
    finally:
        code = server.stop()
    assert code == 0, server.log_text()
    assert len(read_samples(server.db)) == 3
    assert "stopped" in server.log_text()


def test_sigint_exits_0_and_db_is_readable(tmp_path: Path) -> None:
    server = start_receiver(tmp_path)
    try:
        assert server.post(encode(batch("sigint")))[0] == 200
    finally:
        server.proc.send_signal(signal.SIGINT)
        code = server.stop()
    assert code == 0, server.log_text()
    assert len(read_samples(server.db)) == 3


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback on this host")
def test_listens_on_ipv6_loopback(tmp_path: Path) -> None:
    server = start_receiver(tmp_path, host="::1")
    try:
        assert server.post(encode(batch("v6")))[0] == 200
    finally:
        assert server.stop() == 0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli("metrics-receiver"), *args], capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--db", "x.db", "--listen", "nonsense"), "listen address 'nonsense'"),
        (("--db", "x.db", "--listen", "127.0.0.1:99999"), "port must be a number 0-65535"),
        (("--db", "x.db", "--max-body-bytes", "0"), "--max-body-bytes must be at least 1"),
        (("--db", "x.db", "--max-body-bytes", "lots"), "invalid int value"),
        (("--db", "x.db", "--max-concurrent-decodes", "0"),
         "--max-concurrent-decodes must be at least 1"),
        (("--db", "x.db", "--max-body-bytes", "1000", "--max-buffered-bytes", "999"),
         "--max-buffered-bytes (999) must be at least --max-body-bytes (1000)"),
        (("--listen", "127.0.0.1:8080",), "the following arguments are required: --db"),
        (("--db", "x.db", "--log-level", "loud"), "invalid choice"),
        (("--db", "x.db", "--bogus"), "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: tuple[str, ...],
                                            message: str) -> None:
    result = subprocess.run([*cli("metrics-receiver"), *args], capture_output=True, text=True,
                            timeout=30, check=False, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith("metrics-receiver: error: ")
    assert not (tmp_path / "x.db").exists()


def test_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / "r.db"))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_default_listen_is_loopback() -> None:
    from belabox_metrics.receiver.app import DEFAULT_LISTEN

    assert DEFAULT_LISTEN == "127.0.0.1:8080"
    assert os.path.basename(__file__) == "test_receiver_http.py"
