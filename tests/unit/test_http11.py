"""The agent's small HTTP/1.1 client against real servers on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from belabox_metrics import http11


def serve(handler: Callable[[socket.socket], None]) -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def loop() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        rest += conn.recv(4096)
    return head


@pytest.fixture
def keepalive_server() -> Iterator[tuple[int, list[int]]]:
    connections: list[int] = []

    def handler(conn: socket.socket) -> None:
        connections.append(1)
        with conn:
            for _ in range(3):
                try:
                    read_request(conn)
                except OSError:
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    yield from ((port, connections) for port in serve(handler))


def test_keepalive_reuses_one_connection(keepalive_server: tuple[int, list[int]]) -> None:
    port, connections = keepalive_server
    conn = http11.Connection("127.0.0.1", port, timeout=2)
    answers = [conn.request("POST", "/x", {"Content-Type": "text/plain"}, b"body") for _ in range(3)]
    assert [(a.status, a.body) for a in answers] == [(200, b"hello")] * 3
    assert len(connections) == 1
    # The server closes after 3: the 4th request reconnects transparently.
    assert conn.request("POST", "/x", {}, b"again").body == b"hello"
    assert len(connections) == 2
    conn.close()


def test_chunked_and_read_to_close_bodies() -> None:
    def handler(conn: socket.socket) -> None:
        with conn:
            read_request(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n")
            read_request(conn)
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
    for port in serve(handler):
        conn = http11.Connection("127.0.0.1", port, timeout=2)
        assert conn.request("GET", "/").body == b"abcdefg"
        assert conn.request("GET", "/").body == b"until close"
        conn.close()


def test_one_deadline_for_a_trickling_server() -> None:
    def handler(conn: socket.socket) -> None:
        with conn:
            read_request(conn)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                for _ in range(100):
                    conn.sendall(b"x")
                    time.sleep(0.1)
            except OSError:
                pass
    for port in serve(handler):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            http11.request(f"http://127.0.0.1:{port}/", timeout=0.5)
        assert time.monotonic() - started < 1.5


def test_garbage_and_oversized_answers_are_errors() -> None:
    def handler(conn: socket.socket) -> None:
        with conn:
            request = read_request(conn)
            if b"/big" in request:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n")
            else:
                conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")
    for port in serve(handler):
        with pytest.raises(http11.HttpError, match="not an HTTP status line"):
            http11.request(f"http://127.0.0.1:{port}/")
        with pytest.raises(http11.HttpError, match="larger than"):
            http11.request(f"http://127.0.0.1:{port}/big", max_body=1000)


def test_refused_connection_is_an_oserror() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        http11.request(f"http://127.0.0.1:{port}/", timeout=1)


def test_agent_modules_do_not_load_openssl_or_http_client() -> None:
    code = ("import sys, belabox_metrics.agent, belabox_metrics.cli.collector, belabox_metrics.collectors;"
            "print(sorted(m for m in ('ssl','_ssl','hashlib','_hashlib','http.client','http.server','email',"
            "'urllib.request','uuid','concurrent.futures') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize(("text", "expected"), [
    ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0),   # IMF-fixdate
    ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0),  # RFC 850
    ("Sun Nov  6 08:49:37 1994", 784111777.0),        # asctime
    ("Sun, 06 Nov 1994 08:49:37", None), ("yesterday", None), ("", None), (None, None),
    ("Sun, 31 Feb 1994 08:49:37 GMT", None)])
def test_http_dates(text: str | None, expected: float | None) -> None:
    from belabox_metrics.timefmt import parse_http_date
    assert parse_http_date(text) == expected
