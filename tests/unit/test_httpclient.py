"""The HTTP client and the upload transport against hostile servers on loopback (issue 16).

A stub server on a free port answers each request with a scripted byte sequence: interim
1xx answers before the real one, chunked bodies with trailers, garbage status lines, a
reset in the middle of a body, redirects, an answer nobody asked for. The transport must
return each request's own final answer or raise TransportError, and the uploader must
acknowledge samples only on a 2xx that answered the request that carried them.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from belabox_metrics.clock import FakeClock
from belabox_metrics.model import Sample, make_labels
from belabox_metrics.store.queue import SampleQueue
from belabox_metrics.upload.encode import wire_format
from belabox_metrics.upload.transport import HttpTransport, TransportError
from belabox_metrics.upload.uploader import Uploader, UploadPolicy

Action = Callable[[socket.socket, str], bool]  # (connection, request id) -> keep the connection open


def answer(status: int, body: bytes = b"", *, head: bytes = b"", extra: bytes = b"") -> Action:
    """``head`` bytes first (interim answers), then the answer echoing the request id."""
    def act(conn: socket.socket, rid: str) -> bool:
        reason = {200: b"OK", 204: b"No Content", 503: b"Service Unavailable", 400: b"Bad Request"}.get(status, b"X")
        conn.sendall(head + b"HTTP/1.1 %d %s\r\nX-Echo: %s\r\nContent-Length: %d\r\n\r\n%s%s"
                     % (status, reason, rid.encode(), len(body), body, extra))
        return True
    return act


def raw(data: bytes, *, then_close: bool = False, reset: bool = False) -> Action:
    def act(conn: socket.socket, rid: str) -> bool:
        conn.sendall(data.replace(b"{rid}", rid.encode()))
        if reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        return not then_close
    return act


class Stub:
    """A scripted HTTP/1.1 server: one action per request (then 204s echoing the id)."""

    def __init__(self, script: list[Action]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, str]] = []  # (request line, request id)
        self.connections = 0
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self, path: str = "/api/v1/import") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        conn.settimeout(10)
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                length = int(fields.get("content-length", "0"))
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                rid = fields.get("x-batch-id") or fields.get("x-request", "")
                with self.lock:
                    self.requests.append((lines[0], rid))
                    action = self.script.pop(0) if self.script else answer(204)
                if not action(conn, rid):
                    return
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.listener.close()


@pytest.fixture
def stub() -> Iterator[Callable[[list[Action]], Stub]]:
    made: list[Stub] = []

    def make(script: list[Action]) -> Stub:
        made.append(Stub(script))
        return made[-1]
    yield make
    for server in made:
        server.close()


def post(transport: HttpTransport, server: Stub, rid: str) -> tuple[int, str | None, bytes]:
    response = transport.post(server.url(), b"payload", {"X-Request": rid})
    return response.status, response.header("X-Echo"), response.body


# -- the transport: each request reads its own answer ----------------------------------------

INTERIM = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"


def test_interim_1xx_answers_are_skipped_and_the_final_answer_is_read(stub: Callable[[list[Action]], Stub]) -> None:
    server = stub([answer(503, b"down", head=INTERIM), answer(204, head=b"HTTP/1.1 103 Early Hints\r\n\r\n")])
    transport = HttpTransport(timeout=5)
    assert post(transport, server, "a") == (503, "a", b"down")
    assert post(transport, server, "b") == (204, "b", b"")
    assert post(transport, server, "c") == (204, "c", b"")
    assert server.connections == 1  # one kept-alive connection throughout
    transport.close()


def test_chunked_answer_with_trailers_keeps_the_connection_in_step(stub: Callable[[list[Action]], Stub]) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nX-Echo: {rid}\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
               b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nX-Checksum: 1234\r\nX-Other: y\r\n\r\n")
    server = stub([raw(chunked), raw(chunked)])
    transport = HttpTransport(timeout=5)
    assert post(transport, server, "a") == (200, "a", b"abcdefg")
    assert post(transport, server, "b") == (200, "b", b"abcdefg")
    assert post(transport, server, "c") == (204, "c", b"")
    assert server.connections == 1
    transport.close()


@pytest.mark.parametrize("garbage", [
    b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    b"\x16\x03\x01\x00\x05hello",                       # a TLS record
    b"HTTP/2.0 204 No Content\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",   # then closed: cut short
])
def test_garbage_answers_fail_the_attempt_and_the_next_request_gets_its_own(
        stub: Callable[[list[Action]], Stub], garbage: bytes) -> None:
    server = stub([raw(garbage, then_close=True)])
    transport = HttpTransport(timeout=5)
    with pytest.raises(TransportError):
        post(transport, server, "a")
    assert post(transport, server, "b") == (204, "b", b"")
    transport.close()


def test_reset_in_the_middle_of_a_body_is_a_failed_attempt(stub: Callable[[list[Action]], Stub]) -> None:
    server = stub([raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100, reset=True)])
    transport = HttpTransport(timeout=5)
    with pytest.raises(TransportError):
        post(transport, server, "a")
    assert post(transport, server, "b") == (204, "b", b"")
    transport.close()


def test_an_answer_nobody_asked_for_is_never_taken_for_the_next_one(stub: Callable[[list[Action]], Stub]) -> None:
    # A confused proxy sends a second, unsolicited 204 after its 503.
    server = stub([answer(503, b"busy", extra=b"HTTP/1.1 204 No Content\r\nX-Echo: stray\r\n\r\n")])
    transport = HttpTransport(timeout=5)
    assert post(transport, server, "a") == (503, "a", b"busy")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(server.requests) < 1:
        time.sleep(0.01)
    time.sleep(0.05)  # let the stray bytes arrive, as they would between two cycles
    assert post(transport, server, "b") == (204, "b", b"")
    transport.close()


def test_connection_close_is_honoured(stub: Callable[[list[Action]], Stub]) -> None:
    close = raw(b"HTTP/1.1 204 No Content\r\nX-Echo: {rid}\r\nConnection: close\r\n\r\n")
    server = stub([close, close])
    transport = HttpTransport(timeout=5)
    for rid in ("a", "b", "c"):
        assert post(transport, server, rid) == (204, rid, b"")
    assert server.connections == 3
    transport.close()


def test_one_deadline_for_a_trickling_server(stub: Callable[[list[Action]], Stub]) -> None:
    def trickle(conn: socket.socket, rid: str) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            conn.sendall(b"x")
            time.sleep(0.1)
        return False
    server = stub([trickle])
    transport = HttpTransport(timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TransportError, match="timeout"):
        post(transport, server, "a")
    assert time.monotonic() - started < 3


def test_oversized_answer_is_an_error(stub: Callable[[list[Action]], Stub]) -> None:
    big = raw(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5000000\r\n\r\n", then_close=True)
    chunked = raw(b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"y" * 1024
                  + b"\r\n" + b"400\r\n" + b"y" * 1024 + b"\r\n0\r\n\r\n")
    server = stub([big, chunked])
    transport = HttpTransport(timeout=5, max_response_bytes=1500)
    with pytest.raises(TransportError, match="larger than"):
        post(transport, server, "a")
    with pytest.raises(TransportError, match="larger than"):
        post(transport, server, "b")
    assert post(transport, server, "c") == (204, "c", b"")


def test_refused_connection_is_a_transport_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(TransportError, match="refused"):
        HttpTransport(timeout=2).post(f"http://127.0.0.1:{port}/", b"", {})


def test_a_server_closing_an_idle_kept_alive_connection_is_reconnected(stub: Callable[[list[Action]], Stub]) -> None:
    server = stub([answer(204), raw(b"HTTP/1.1 204 No Content\r\nX-Echo: {rid}\r\n\r\n", then_close=True)])
    transport = HttpTransport(timeout=5)
    assert post(transport, server, "a")[:2] == (204, "a")
    assert post(transport, server, "b")[:2] == (204, "b")  # the server closes after this one
    time.sleep(0.05)
    assert post(transport, server, "c")[:2] == (204, "c")
    assert server.connections == 2


def test_plain_http_agent_does_not_load_openssl() -> None:
    """A plain-http agent imports http.client with ssl masked: OpenSSL is ~5 MB of RSS."""
    code = ("import sys, belabox_metrics.agent, belabox_metrics.cli.collector, belabox_metrics.collectors;"
            "from belabox_metrics import httpclient; import socket;"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close();"
            "exec('try:\\n httpclient.request(f\"http://127.0.0.1:{port}/\", timeout=1)\\nexcept OSError: pass');"
            "print(sorted(m for m in ('ssl','_ssl','http.client','urllib.request','uuid') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "['http.client']"


# -- the uploader: acknowledged only on its own 2xx ------------------------------------------

def queue_with(tmp_path: Path, count: int) -> SampleQueue:
    queue = SampleQueue.open(str(tmp_path / "agent.db"))
    now_ms = int(time.time() * 1000)
    queue.append([Sample("hostile.value", float(i), now_ms - 60_000 + i, make_labels(n=str(i % 3)))
                  for i in range(count)])
    return queue


def uploader(queue: SampleQueue, url: str, clock: FakeClock) -> Uploader:
    return Uploader(queue, HttpTransport(timeout=5), url=url, fmt=wire_format("vm-jsonl", "box"), clock=clock,
                    log=logging.getLogger("hostile"), rng=random.Random(1),
                    policy=UploadPolicy(max_samples=50, max_attempts=1, backoff_base=0.1, backoff_max=0.2))


@pytest.mark.parametrize("wrong", [
    answer(503, b"down", head=INTERIM),
    answer(503, b"down", head=b"HTTP/1.1 103 Early Hints\r\n\r\n"),
    raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10, reset=True),
    raw(b"garbage\r\n\r\n", then_close=True),
    raw(b"HTTP/1.1 204 No Content\r\nX-Echo: {rid}\r\n", then_close=True),  # headers never end
], ids=["100+103 then 503", "103 then 503", "reset mid-body", "garbage", "cut headers"])
def test_nothing_is_acknowledged_on_a_wrong_answer(stub: Callable[[list[Action]], Stub], tmp_path: Path,
                                                   wrong: Action) -> None:
    server = stub([wrong])
    queue = queue_with(tmp_path, 30)
    clock = FakeClock(wall=time.time())
    up = uploader(queue, server.url(), clock)
    result = up.run_cycle()
    assert result.acknowledged == 0 and queue.pending_count(up.destination) == 30
    assert up.uploaded_total == 0
    clock.advance(3600)
    # The next request reads its own answer (a 204 echoing its batch id) and acknowledges.
    result = up.run_cycle()
    assert result.acknowledged == 30 and queue.pending_count(up.destination) == 0
    assert len(server.requests) == 2 and server.requests[0][1] != server.requests[1][1]
    queue.close()
@pytest.mark.parametrize(("status", "location"), [
    (301, "https://metrics.example.org/api/v1/import"), (302, "https://metrics.example.org/api/v1/import"),
    (307, "https://metrics.example.org/api/v1/import"), (308, "/vm/api/v1/import")])
def test_a_redirect_is_not_followed_and_nothing_is_acknowledged(stub: Callable[[list[Action]], Stub],
                                                                tmp_path: Path, status: int, location: str) -> None:
    server = stub([raw(b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n"
                       % (status, location.encode()))] * 5)
    if location.startswith("/"):
        location = f"http://127.0.0.1:{server.port}{location}"
    queue = queue_with(tmp_path, 30)
    clock = FakeClock(wall=time.time())
    up = uploader(queue, server.url(), clock)
    result = up.run_cycle()
    assert result.acknowledged == 0 and queue.pending_count(up.destination) == 30
    assert len(server.requests) == 1  # one request: no bisection of a redirect, no re-send
    assert up.last_error is not None and location in up.last_error
    assert f"set remote.url to {location}" in up.last_error
    queue.close()
