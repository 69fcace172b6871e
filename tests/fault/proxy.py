"""A fault-injecting HTTP proxy on loopback, in front of a real VictoriaMetrics.

Each arriving request takes the next fault from a script (then ``forward`` once the script
is used up) and the proxy logs its arrival time and what it did, so a test can check the
agent's retry timing from the server's side of the wire:

- ``Fault.status(500)``: answer that status without forwarding;
- ``Fault.retry_after(429, "2")`` / ``Fault.retry_after_date(429, 3.0)``: 429 with
  ``Retry-After`` as delta-seconds or as an HTTP-date that many seconds ahead;
- ``Fault.reset()``: read the request, then close with SO_LINGER 0 (the peer sees RST);
- ``Fault.stall(s)``: read the request, answer nothing for ``s`` seconds, then close;
- ``Fault.slow(s)``: forward, then hold the upstream answer ``s`` seconds before sending
  it (past the agent's timeout this is "VM stored it but the agent never heard");
- ``Fault.forward()``: pass the request to the upstream and its answer back.

Raw sockets, not http.server: a reset and a stall need control of the connection itself.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate

REASONS = {200: "OK", 204: "No Content", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable"}
FORWARDED_HEADERS = ("content-type", "content-encoding", "authorization")


@dataclass(frozen=True)
class Fault:
    kind: str                    # status | retry_after | retry_after_date | reset | stall | slow | forward
    status: int = 0
    retry_after: str = ""
    seconds: float = 0.0

    @staticmethod
    def status_only(status: int) -> Fault:
        return Fault("status", status)

    @staticmethod
    def retry_after_seconds(status: int, value: str) -> Fault:
        return Fault("retry_after", status, retry_after=value)

    @staticmethod
    def retry_after_date(status: int, seconds_ahead: float) -> Fault:
        return Fault("retry_after_date", status, seconds=seconds_ahead)

    @staticmethod
    def reset() -> Fault:
        return Fault("reset")

    @staticmethod
    def stall(seconds: float) -> Fault:
        return Fault("stall", seconds=seconds)

    @staticmethod
    def slow(seconds: float) -> Fault:
        return Fault("slow", seconds=seconds)

    @staticmethod
    def forward() -> Fault:
        return Fault("forward")


@dataclass(frozen=True)
class Arrival:
    monotonic: float             # when the whole request had arrived
    wall: float
    fault: Fault
    batch_id: str
    body_bytes: int
    outcome: str                 # "HTTP 204", "reset", "stalled", "upstream down"
    retry_after: str | None = None


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, script: Iterable[Fault] = ()) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.script: deque[Fault] = deque(script)
        self.log: list[Arrival] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/import"

    def start(self) -> FaultProxy:
        self._acceptor.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)
        self._sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self.script.extend(faults)

    def clear(self) -> None:
        """Drop the faults not used yet: from now on every request is forwarded."""
        with self._lock:
            self.script.clear()

    def remaining(self) -> int:
        with self._lock:
            return len(self.script)

    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self.log)

    # -- serving ---------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        reader = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                path, headers, body = request
                with self._lock:
                    fault = self.script.popleft() if self.script else Fault.forward()
                arrived, wall = time.monotonic(), time.time()
                keep_open = self._apply(conn, fault, path, headers, body, arrived, wall)
                if not keep_open:
                    return
        except OSError:
            return
        finally:
            reader.close()
            conn.close()

    def _record(self, arrived: float, wall: float, fault: Fault, headers: dict[str, str], body: bytes,
                outcome: str, retry_after: str | None = None) -> None:
        with self._lock:
            self.log.append(Arrival(arrived, wall, fault, headers.get("x-batch-id", ""), len(body), outcome,
                                    retry_after))

    def _apply(self, conn: socket.socket, fault: Fault, path: str, headers: dict[str, str], body: bytes,
               arrived: float, wall: float) -> bool:
        if fault.kind == "reset":
            self._record(arrived, wall, fault, headers, body, "reset")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if fault.kind == "stall":
            self._record(arrived, wall, fault, headers, body, "stalled")
            self._stop.wait(fault.seconds)
            return False
        if fault.kind in ("status", "retry_after", "retry_after_date"):
            extra: dict[str, str] = {}
            if fault.kind == "retry_after":
                extra["Retry-After"] = fault.retry_after
            elif fault.kind == "retry_after_date":
                extra["Retry-After"] = formatdate(time.time() + fault.seconds, usegmt=True)
            self._record(arrived, wall, fault, headers, body, f"HTTP {fault.status}", extra.get("Retry-After"))
            conn.sendall(_response(fault.status, b"injected fault\n", extra))
            return True
        status, answer = self._forward(path, headers, body)
        self._record(arrived, wall, fault, headers, body, f"HTTP {status}" if status else "upstream down")
        if fault.kind == "slow":
            self._stop.wait(fault.seconds)
        conn.sendall(_response(status or 502, answer, {}))
        return True

    def _forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        upstream = http.client.HTTPConnection(*self.upstream, timeout=10)
        try:
            upstream.request("POST", path, body=body,
                             headers={k: v for k, v in headers.items() if k in FORWARDED_HEADERS})
            answer = upstream.getresponse()
            return answer.status, answer.read()
        except OSError:
            return 0, b"upstream down\n"
        finally:
            upstream.close()


def _read_request(reader: object) -> tuple[str, dict[str, str], bytes] | None:
    """One HTTP/1.1 request with a Content-Length body, or None at end of stream."""
    readline = reader.readline  # type: ignore[attr-defined]
    line = readline(65537)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        return None
    headers: dict[str, str] = {}
    while True:
        header = readline(65537)
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))  # type: ignore[attr-defined]
    return parts[1], headers, body


def _response(status: int, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Length: {len(body)}",
            "Content-Type: text/plain", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
